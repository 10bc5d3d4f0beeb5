"""Off-node copies and the rebuild of a lost IMAP node, on real parts: four sshd nodes in
namespaces (IMAP node A with a zfs-fuse pool, an SMTP node, a backup node with its own
pool, and a second IMAP node B), a real S3 server (rclone) as the target, mail delivered
through Postfix and read back over IMAPS from Courier.

A mail with a unique token lands on A; snapshots are copied to the backup node (zfs send
relayed by the controller) and to S3 (encrypted streams with a manifest); a second mail
and snapshot go over incrementally; A's pool is destroyed and A stopped; "restore onto a
new node" receives the domain onto B, moves the placement and converges, and the token
message is readable over IMAPS on B. The holder of the copies (permanent deletion) finds
and destroys them at the end.
"""

from __future__ import annotations

import imaplib
import secrets
from pathlib import Path

import paramiko
import pytest
from django.urls import reverse

from backup import crypto, holders
from backup.models_offnode import OffnodeCopy, OffnodeSetting
from deploy.models import DomainPlacement
from deploy.services import registry
from deploy.services.zfs import SERVICE as ZFS
from servers.models import Zone
from tests.converge.conftest import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    zone,
)
from tests.converge.fleet import Fleet, _start_zfs, _stop_zfs, fleet, new_pool_name
from tests.converge.test_mail_flow import tls
from tests.converge.test_mail_store import PASSWORD, _failed_jobs, _send, _wait_in_node
from tests.fixtures import Cast, token_client
from ums import jobs
from ums.models import Job

from .servers import S3Server

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "offnode.example"
A, SMTP, BACKUP, B = 0, 1, 2, 3


@pytest.fixture
def copy_fleet(
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    controller_pkey: paramiko.PKey,  # noqa: F811
    controller_key,  # noqa: F811
    zone: Zone,  # noqa: F811
    cast: Cast,
    mail_services: None,  # noqa: F811
    settings,
    monkeypatch: pytest.MonkeyPatch,
):
    pool, backup_pool = new_pool_name(), new_pool_name()
    monkeypatch.setattr(registry, "SERVICES", [ZFS, *registry.SERVICES])
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "mail_store_pool": pool}
    roles = [["imap"], ["smtp"], ["backup"], ["imap"]]
    with fleet(
        tmp_path_factory, controller_pkey, zone, cast, roles, zfs={A: pool, BACKUP: backup_pool}
    ) as f:
        # B gets the same pool name (every IMAP node's mail store is the deployment's
        # mail_store_pool) on its own zfs-fuse and image file.
        _start_zfs(f.tnodes[B], tmp_path, pool)
        try:
            yield f
        finally:
            _stop_zfs(f.tnodes[B], pool)


def _job(response) -> Job:
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["id"])


def _ok(job: Job) -> Job:
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    return job


def _snaps(f: Fleet, index: int, dataset: str) -> list[str]:
    listed = f.in_node(
        index, ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset], check=False
    )
    return [line.partition("@")[2] for line in listed.stdout.split()]


def _guid(f: Fleet, index: int, snapshot: str) -> str:
    # -p: without it zfs-fuse humanises a GUID ("9.21E"), so any two would compare equal.
    argv = ["zfs", "get", "-H", "-p", "-o", "value", "guid", snapshot]
    return f.in_node(index, argv).stdout.strip()


def _imaps_bodies(address: str) -> bytes:
    imap = imaplib.IMAP4_SSL(address, 993, ssl_context=tls(), timeout=60)
    try:
        imap.login(f"alice@{DOMAIN}", PASSWORD)
        typ, data = imap.select("INBOX")
        assert typ == "OK", data
        typ, data = imap.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK", data
        return b"".join(part[1] for part in data if isinstance(part, tuple))
    finally:
        imap.logout()


def test_copies_to_backup_node_and_s3_then_rebuild_lost_node(
    cast: Cast, copy_fleet: Fleet, s3_server: S3Server
) -> None:
    jobs.load_handlers()
    f = copy_fleet
    pool, backup_pool = f.pools[A], f.pools[BACKUP]
    node_a, backup_node, node_b = f.nodes[A], f.nodes[BACKUP], f.nodes[B]
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("mail-domain-list"), {"name": DOMAIN, "customer": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    domain_id = response.json()["id"]
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": domain_id, "localPart": "alice", "password": PASSWORD, "quotaMb": 40},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert DomainPlacement.objects.get(domain_id=domain_id).node_id == node_a.pk
    assert not _failed_jobs(), _failed_jobs()
    token = f"offnode-{secrets.token_hex(6)}"
    _send(f, f"alice@{DOMAIN}", token)
    _wait_in_node(f, f"/var/mail/vhosts/{DOMAIN}/alice/Maildir/new", token)
    _ok(_job(client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")))

    # Where A's copies go: the backup node and an S3 target.
    response = client.post(
        "/api/v1/backup/targets/", s3_server.target_body(cast.ministry.pk), format="json"
    )
    assert response.status_code == 201, response.content
    target_id = response.json()["id"]
    response = client.post(
        "/api/v1/backup/offnode-settings/",
        {
            "node": node_a.pk,
            "backupNode": backup_node.pk,
            "backupDataset": f"{backup_pool}/copies",
            "target": target_id,
            "intervalMinutes": 60,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    setting_id = response.json()["id"]
    # A node without the backup role cannot hold copies; intervals have a floor.
    for change, field in (
        ({"backupNode": f.nodes[SMTP].pk}, "backupNode"),
        ({"intervalMinutes": 1}, "intervalMinutes"),
    ):
        response = client.patch(
            f"/api/v1/backup/offnode-settings/{setting_id}/", change, format="json"
        )
        assert response.status_code == 400, response.content
        assert set(response.json()["errors"]) == {field}

    # First copy: full streams.
    _ok(_job(client.post(f"/api/v1/backup/offnode-settings/{setting_id}/copy-now/")))
    copy = f"{backup_pool}/copies/{DOMAIN}"
    source = f"{pool}/mail/{DOMAIN}"
    first = _snaps(f, A, source)
    assert _snaps(f, BACKUP, copy) == first
    assert _guid(f, BACKUP, f"{copy}@{first[-1]}") == _guid(f, A, f"{source}@{first[-1]}")
    stored = sorted((s3_server.root / "backups" / "ums-offnode" / DOMAIN).rglob("*"))
    objects = [p for p in stored if p.is_file()]
    assert {p.name for p in objects} >= {"manifest.json"} and len(objects) == 2
    for path in objects:  # encrypted client-side: the token is nowhere in clear
        assert token.encode() not in path.read_bytes()
        assert path.read_bytes().startswith(crypto.MAGIC)

    # Second mail and snapshot: the scheduler's pass sends only the increment.
    token2 = f"offnode-{secrets.token_hex(6)}"
    _send(f, f"alice@{DOMAIN}", token2)
    _wait_in_node(f, f"/var/mail/vhosts/{DOMAIN}/alice/Maildir/new", token2)
    _ok(_job(client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")))
    from backup import offnode_jobs

    assert offnode_jobs.schedule()["started"] == []  # the interval has not elapsed
    OffnodeSetting.objects.filter(pk=setting_id).update(last_run_at=None)
    assert offnode_jobs.schedule()["started"] == [node_a.hostname]
    job = _ok(Job.objects.filter(kind="backup.offnode_copy").order_by("-pk").first())
    second = _snaps(f, A, source)
    assert _snaps(f, BACKUP, copy) == second and len(second) == len(first) + 1
    sent = job.result["node"][0]["sent"]
    assert sent == {"base": first[-1], "snapshot": second[-1]}
    assert job.result["target"][0]["sent"]["base"] == first[-1]
    rows = client.get(f"/api/v1/backup/offnode-copies/?domain={domain_id}").json()["results"]
    assert sorted(r["kind"] for r in rows) == ["node", "target"]
    assert all(r["lastSnapshot"] == second[-1] for r in rows)

    # Node A is lost: the node down (its zfs-fuse with it) and the pool's disk gone.
    f.tnodes[A].stop()
    image = f.cluster.base_dir / f"{pool}.img"
    assert image.exists()
    image.unlink()
    response = client.post(
        "/api/v1/backup/offnode-settings/rebuild/",
        {"node": node_a.pk, "newNode": node_b.pk},
        format="json",
    )
    job = _ok(_job(response))
    assert DomainPlacement.objects.get(domain_id=domain_id).node_id == node_b.pk
    assert _snaps(f, B, source) == second
    for converge in Job.objects.filter(kind="node.converge", object_id=str(node_b.pk)):
        if converge.pk > job.pk:
            _ok(converge)
    bodies = _imaps_bodies(f.tnodes[B].address)
    assert token.encode() in bodies and token2.encode() in bodies
    # Run again (a retried job): nothing is received twice, nothing changes.
    from backup import rebuild
    from deploy.nodes import session
    from mail.models import Domain

    said: list[str] = []
    with session(node_b) as conn:
        rebuild.receive_domain(
            conn,
            Domain.objects.get(pk=domain_id),
            rebuild.source_copy(DOMAIN),
            lambda msgid, **params: said.append(msgid % params),
        )
    assert said == [f"{DOMAIN} was already received"]
    assert _snaps(f, B, source) == second
    # B inherited A's copy setting; its next copy continues the same chains.
    b_setting = OffnodeSetting.objects.get(node=node_b)
    assert (b_setting.backup_node_id, b_setting.target_id) == (backup_node.pk, target_id)
    _ok(_job(client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")))
    job = _ok(_job(client.post(f"/api/v1/backup/offnode-settings/{b_setting.pk}/copy-now/")))
    third = _snaps(f, B, source)
    assert job.result["node"][0]["sent"] == {"base": second[-1], "snapshot": third[-1]}
    assert job.result["target"][0]["sent"]["base"] == second[-1]
    assert _snaps(f, BACKUP, copy) == third
    # The target's chain (full, then incrementals) restores the same snapshot.
    from backup import drivers
    from backup.models import BackupTarget

    driver = drivers.driver_for(BackupTarget.objects.get(pk=target_id))
    with session(backup_node) as conn:
        got = rebuild.receive_from_target(conn, driver, DOMAIN, f"{backup_pool}/froms3")
    driver.close()
    assert got == [first[-1], second[-1], third[-1]]
    assert _guid(f, BACKUP, f"{backup_pool}/froms3@{third[-1]}") == _guid(
        f, B, f"{source}@{third[-1]}"
    )

    # Permanent deletion: the holder lists both copies, whole-domain, and destroys them.
    domain = Domain.objects.get(pk=domain_id)
    holder = next(h for h in holders.holders() if h.name == "offnode")
    held = holder.find(domain, "alice")
    assert len(held) == 2 and all(DOMAIN in " ".join(h.also_removes) for h in held)
    lines: list[str] = []
    for item in held:
        holder.destroy(item, domain, "alice", lines.append)
        holder.destroy(item, domain, "alice", lines.append)  # idempotent
    assert _snaps(f, BACKUP, copy) == []
    assert f.in_node(BACKUP, ["zfs", "list", copy], check=False).returncode != 0
    left = [p for p in (s3_server.root / "backups").rglob("*") if p.is_file()]
    assert not [p for p in left if DOMAIN in str(p)], left
    assert not OffnodeCopy.objects.filter(domain_name=DOMAIN).exists()
    assert holder.find(domain, None) == []
