"""Restores from Maildir archive copies, on-demand snapshot retention, deleting one
snapshot, and rebuilding a lost IMAP node from an archive, on real parts: three sshd
nodes in namespaces (IMAP node A with a zfs-fuse pool, an SMTP node, IMAP node B with its
own zfs-fuse and a pool of the same name), Postfix delivering, Courier read over IMAPS,
and a plain directory standing in for an NFS mount as the target (no NFS server or
client can run on these machines).

A token lands in alice's INBOX and another in her "Work" folder; "Snapshot now" and a
Maildir archive copy; "Work" is deleted by mistake and restored in place from the archive
through the portal form (the Django test client), then deleted again and the whole
domain restored into "Restored <date>" through the API: both tokens come back over
IMAPS. Retention destroys an old on-demand snapshot and keeps the young one; one
snapshot is deleted through the API. Then a 40 MB message is archived, node A is lost,
and "Restore onto a new node" rebuilds the domain on B from the archive (the only copy:
an increment, its point assembled from the chain)
while a real Celery worker is SIGKILLed in the middle of ``tar -x``: the resumed job
finishes, B serves both tokens over IMAPS and holds the big message once.
"""

from __future__ import annotations

import imaplib
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import paramiko
import pytest
from django.db import transaction

from backup import crypto, offnode_actions, tasks
from backup.models import Snapshot
from backup.models_offnode import OffnodeCopy
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
from tests.harness.worker import celery_stack, wait_for
from ums import jobs
from ums.models import Job

from .test_portal import portal

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "archrestore.example"
A, SMTP, B = 0, 1, 2
STALE = 6
OLD_MANUAL = "ums-manual-20200101T000000Z"


@pytest.fixture(autouse=True)
def _own_var_dir(settings, tmp_path: Path) -> None:
    settings.VAR_DIR = tmp_path


@pytest.fixture
def two_store_fleet(
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
    pool = new_pool_name()
    monkeypatch.setattr(registry, "SERVICES", [ZFS, *registry.SERVICES])
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "mail_store_pool": pool}
    roles = [["imap"], ["smtp"], ["imap"]]
    with fleet(tmp_path_factory, controller_pkey, zone, cast, roles, zfs={A: pool}) as f:
        # B: the same pool name on its own zfs-fuse and image (as in test_offnode_node).
        _start_zfs(f.tnodes[B], tmp_path, pool)
        try:
            yield f
        finally:
            _stop_zfs(f.tnodes[B], pool)


@contextmanager
def imaps(address: str) -> Iterator[imaplib.IMAP4_SSL]:
    imap = imaplib.IMAP4_SSL(address, 993, ssl_context=tls(), timeout=60)
    try:
        imap.login(f"alice@{DOMAIN}", PASSWORD)
        yield imap
    finally:
        with suppress(imaplib.IMAP4.error, OSError):
            imap.logout()


def bodies(address: str, folder: str) -> bytes:
    """Every message of ``folder`` as Courier serves it over IMAPS."""
    with imaps(address) as imap:
        typ, data = imap.select(f'"{folder}"', readonly=True)
        assert typ == "OK", (folder, data)
        typ, data = imap.fetch("1:*", "(BODY.PEEK[])")
        if typ != "OK" or data == [None]:
            return b""
        return b"".join(part[1] for part in data if isinstance(part, tuple))


def _ok(job: Job) -> Job:
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    return job


def _job(response) -> Job:
    assert response.status_code == 202, response.content
    return _ok(Job.objects.get(pk=response.json()["id"]))


def _snaps(f: Fleet, index: int, dataset: str) -> list[str]:
    listed = f.in_node(
        index, ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset], check=False
    )
    return [line.partition("@")[2] for line in listed.stdout.split()]


def _rebuilding(f: Fleet) -> bool:
    found = f.in_node(B, ["pgrep", "-f", "tar -x -C /var/lib/ums-archive/rebuild-"], check=False)
    return found.returncode == 0


def test_archive_restores_retention_delete_and_rebuild_from_archive(
    cast: Cast, two_store_fleet: Fleet, tmp_path: Path, settings
) -> None:
    jobs.load_handlers()
    f = two_store_fleet
    pool = f.pools[A]
    client = token_client(cast.sub_admin)
    response = client.post(
        "/api/v1/mail/domains/", {"name": DOMAIN, "customer": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    domain_id = response.json()["id"]
    response = client.post(
        "/api/v1/mail/mailboxes/",
        {"domain": domain_id, "localPart": "alice", "password": PASSWORD, "quotaMb": 200},
        format="json",
    )
    assert response.status_code == 201, response.content
    alice_id = response.json()["id"]
    assert not _failed_jobs(), _failed_jobs()
    maildir = f"/var/mail/vhosts/{DOMAIN}/alice/Maildir"
    inbox, work = f"inbox-{secrets.token_hex(8)}", f"work-{secrets.token_hex(8)}"
    _send(f, f"alice@{DOMAIN}", inbox)
    _wait_in_node(f, f"{maildir}/new", inbox)
    # The "Work" folder, owned like the Maildir, with a delivered message moved into it.
    _send(f, f"alice@{DOMAIN}", work)
    path = _wait_in_node(f, f"{maildir}/new", work)
    f.in_node(A, ["mkdir", "-p", *(f"{maildir}/.Work/{s}" for s in ("cur", "new", "tmp"))])
    f.in_node(A, ["chown", "-R", f"--reference={maildir}", f"{maildir}/.Work"])
    f.in_node(A, ["mv", path, f"{maildir}/.Work/cur/{path.rsplit('/', 1)[1]}:2,S"])
    assert work.encode() in bodies(f.tnodes[A].address, "INBOX.Work")

    _job(client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json"))
    nfs_root = tmp_path / "nfs"
    nfs_root.mkdir()
    response = client.post(
        "/api/v1/backup/targets/",
        {"customer": cast.ministry.pk, "name": "nfs", "kind": "nfs", "nfsPath": str(nfs_root)},
        format="json",
    )
    assert response.status_code == 201, response.content
    response = client.post(
        "/api/v1/backup/offnode-settings/",
        {
            "node": f.nodes[A].pk,
            "target": response.json()["id"],
            "targetFormat": "maildir",
            "targetKeepChains": 1,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    setting_id = response.json()["id"]
    _job(client.post(f"/api/v1/backup/offnode-settings/{setting_id}/copy-now/"))
    copy = OffnodeCopy.objects.get(domain_name=DOMAIN, kind=OffnodeCopy.ARCHIVE)

    # The mistake: the Work folder deleted. Restored in place through the portal: the
    # domain's snapshot page lists the archive with a Restore button leading to the form.
    f.in_node(A, ["rm", "-rf", f"{maildir}/.Work"])
    web = portal(cast.sub_admin)
    page = web.get(f"/backup/domains/{domain_id}/snapshots/").content.decode()
    form_url = f"/backup/offnode/copies/{copy.pk}/restore/"
    assert form_url in page and copy.last_snapshot in page
    response = web.get(f"{form_url}?snapshot={copy.last_snapshot}")
    assert response.status_code == 200 and "In place" in response.content.decode()
    what = {"snapshot": copy.last_snapshot, "mailbox": alice_id, "folder": "Work"}
    response = web.post(form_url, {**what, "mode": "in_place"})  # not confirmed
    assert (
        response.status_code == 200 and "Confirm the in-place restore" in response.content.decode()
    )
    response = web.post(form_url, {**what, "mode": "in_place", "confirm": "on"})
    assert response.status_code == 302, response.content.decode()[-3000:]
    job = _ok(Job.objects.filter(kind="backup.archive_restore").latest("pk"))
    assert response["Location"] == f"/jobs/{job.pk}/" or str(job.pk) in response["Location"]
    assert job.result["mode"] == "in_place" and job.result["messages"] == 1
    assert work.encode() in bodies(f.tnodes[A].address, "INBOX.Work")
    assert inbox.encode() in bodies(f.tnodes[A].address, "INBOX")

    # Again deleted; the whole domain through the API into "Restored <date>".
    f.in_node(A, ["rm", "-rf", f"{maildir}/.Work"])
    url = f"/api/v1/backup/offnode-copies/{copy.pk}/restore/"
    for bad, field in (({"folder": "Work"}, "folder"), ({"mode": "over"}, "mode")):
        response = client.post(url, bad, format="json")
        assert response.status_code == 400 and set(response.json()["errors"]) == {field}
    job = _job(client.post(url, {}, format="json"))
    restored = job.result["folders"]["alice"]
    assert restored.startswith("Restored ") and job.result["mode"] == "new_folder"
    assert inbox.encode() in bodies(f.tnodes[A].address, f"INBOX.{restored}")
    assert work.encode() in bodies(f.tnodes[A].address, f"INBOX.{restored}.Work")
    assert inbox.encode() in bodies(f.tnodes[A].address, "INBOX")  # nothing was replaced

    # Retention of on-demand snapshots: an old one goes, the young one stays.
    dataset = f"{pool}/mail/{DOMAIN}"
    f.in_node(A, ["zfs", "snapshot", f"{dataset}@{OLD_MANUAL}"])
    response = client.patch(
        f"/api/v1/backup/snapshot-policies/{cast.ministry.pk}/",
        {"manualKeepDays": 7},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["effective"]["manualKeepDays"]["value"] == 7
    young = [n for n in _snaps(f, A, dataset) if n.startswith("ums-manual-") and n != OLD_MANUAL]
    assert young and tasks.schedule()["started"] == [f.nodes[A].hostname]
    _ok(Job.objects.filter(kind="backup.snapshot_node").latest("pk"))
    names = _snaps(f, A, dataset)
    assert OLD_MANUAL not in names and set(young) <= set(names), names
    rows = client.get(f"/api/v1/backup/snapshots/?domain={domain_id}").json()["results"]
    assert {r["name"] for r in rows} == set(names)

    # Delete one snapshot through the API: a job; the node and the listing lose it.
    hourly = Snapshot.objects.get(domain_id=domain_id, tier="hourly")
    _job(client.delete(f"/api/v1/backup/snapshots/{hourly.pk}/"))
    assert hourly.name not in _snaps(f, A, dataset)
    assert not Snapshot.objects.filter(pk=hourly.pk).exists()

    # A big message, archived; then node A is lost (down, its pool's disk gone).
    f.in_node(A, ["dd", "if=/dev/urandom", f"of={maildir}/cur/big", "bs=1M", "count=40"])
    f.in_node(A, ["chown", f"--reference={maildir}", f"{maildir}/cur/big"])
    _job(client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json"))
    _job(client.post(f"/api/v1/backup/offnode-settings/{setting_id}/copy-now/"))
    # An increment of the first archive's chain (a full archive every 7 passes): the
    # rebuild below reads its point, assembled from the chain.
    manifest = nfs_root / "ums-archive" / DOMAIN / "manifest.json"
    kept = json.loads(crypto.decrypt_bytes(manifest.read_bytes()))["archives"]
    assert [a["kind"] for a in kept] == ["full", "incremental"]
    f.tnodes[A].stop()
    (f.cluster.base_dir / f"{pool}.img").unlink()

    # Restore onto B from the archive (the only copy), the worker killed mid-extraction.
    env = {
        "UMS_CELERY_IMPORTS": "tests.faults.worker_setup",
        "UMS_NODE_SETTINGS": json.dumps(settings.UMS_CONVERGE),
        "UMS_JOB_STALE_SECONDS": str(STALE),
        "UMS_RECONCILE_INTERVAL": "1",
    }
    settings.UMS_JOB_STALE_SECONDS = STALE
    celery_dir = tmp_path / "celery"
    celery_dir.mkdir()
    with celery_stack(celery_dir, env=env) as (worker, _beat):
        with transaction.atomic():
            job = offnode_actions.start_rebuild(
                actor=cast.sub_admin, node=f.nodes[A], new_node=f.nodes[B]
            )
        wait_for(lambda: _rebuilding(f), timeout=120, what="tar -x into the staging dataset")
        worker.kill()
        job.refresh_from_db()
        assert job.status != Job.SUCCEEDED
        assert f.in_node(B, ["zfs", "list", dataset], check=False).returncode != 0
        worker.restart()

        def finished() -> bool:
            job.refresh_from_db()
            return job.status in (Job.SUCCEEDED, Job.FAILED)

        wait_for(finished, timeout=300, what="the rebuild to finish after the restart")
        assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
        assert job.attempts >= 2

        def converged() -> bool:
            pending = Job.objects.filter(
                kind="node.converge", object_id=str(f.nodes[B].pk), pk__gt=job.pk
            )
            return (
                pending.exists()
                and not pending.exclude(status__in=(Job.SUCCEEDED, Job.FAILED)).exists()
            )

        wait_for(converged, timeout=300, what="B converged after the rebuild")
    for converge in Job.objects.filter(
        kind="node.converge", object_id=str(f.nodes[B].pk), pk__gt=job.pk
    ):
        _ok(converge)
    assert DomainPlacement.objects.get(domain_id=domain_id).node_id == f.nodes[B].pk
    # The archived snapshot (beat may have taken scheduled ones on B since).
    names = _snaps(f, B, dataset)
    assert OffnodeCopy.objects.get(pk=copy.pk).last_snapshot in names, names
    listed = f.in_node(B, ["zfs", "list", "-H", "-o", "name"]).stdout
    assert "ums-rebuild" not in listed, listed
    found = f.in_node(B, ["find", maildir, "-type", "f", "-size", "40M"]).stdout.split()
    assert found == [f"{maildir}/cur/big"], (
        found,
        f.in_node(B, ["zfs", "get", "-H", "mounted,mountpoint", dataset], check=False).stdout,
        f.in_node(B, ["ls", "-laR", maildir], check=False).stdout[-3000:],
        job.log,
    )
    assert inbox.encode() in bodies(f.tnodes[B].address, "INBOX")
    # "Work" was deleted again before this archive; its restored copy was archived.
    assert work.encode() in bodies(f.tnodes[B].address, f"INBOX.{restored}.Work")
