"""Maildir export and permanent purge on a real IMAP node (zfs-fuse pool in the node's
namespace, Postfix delivering, sshd) with a real S3 server (rclone serve s3).

A unique token is delivered to alice; a snapshot is taken; exports are made to the S3
target, to the controller (downloaded through the API) and from the snapshot (a read-only
clone on zfs-fuse, which has no ``.zfs/snapshot`` folder); each tar is extracted and the
token found in alice's Maildir. Then ``purge_mailbox --permanent``: answering "no"
changes nothing; ``--yes`` removes the Maildir, every snapshot of the domain, the S3
objects and the controller file; the token is nowhere the system manages, bob survives.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import tarfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditRecord
from backup import actions as backup_actions
from backup import drivers, holders
from backup import export as export_mod
from backup.models import BackupTarget, Export, Purge, Snapshot
from mail.models import Domain, Mailbox
from tests.converge.test_mail_store import IMAP, PASSWORD, _failed_jobs, _send, _wait_in_node
from tests.fixtures import Cast, token_client
from ums import jobs
from ums.models import Job

from .servers import S3Server
from .test_snapshots_node import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    store_fleet,
    zone,
)


@pytest.fixture(autouse=True)
def _own_var_dir(settings, tmp_path: Path) -> None:
    settings.VAR_DIR = tmp_path  # controller export files of this test only


pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "purge.example"


def _members_with(data: bytes, token: str) -> list[str]:
    """Names of the tar's regular files that contain ``token`` (the tar must be valid)."""
    found = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            if member.isfile() and token.encode() in tar.extractfile(member).read():
                found.append(member.name)
    return found


def _export(client, payload: dict) -> Export:
    response = client.post("/api/v1/backup/exports/", payload, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job"]["id"])
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert job.progress_done == job.progress_total > 0
    return Export.objects.get(pk=response.json()["id"])


def _purge(answer: str | None, monkeypatch: pytest.MonkeyPatch) -> str:
    out = io.StringIO()
    args = [f"alice@{DOMAIN}", "--permanent"]
    if answer is None:
        args.append("--yes")
    else:
        monkeypatch.setattr("builtins.input", lambda: answer)
    call_command("purge_mailbox", *args, stdout=out)
    return out.getvalue()


def test_export_then_permanent_purge_on_a_real_node(
    cast: Cast,
    store_fleet,  # noqa: F811
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    settings,
) -> None:
    jobs.load_handlers()
    f, pool = store_fleet, store_fleet.pools[IMAP]
    client = token_client(cast.sub_admin)
    response = client.post(
        "/api/v1/mail/domains/", {"name": DOMAIN, "customer": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    domain_id = response.json()["id"]
    ids = {}
    for local_part in ("alice", "bob"):
        response = client.post(
            "/api/v1/mail/mailboxes/",
            {"domain": domain_id, "localPart": local_part, "password": PASSWORD, "quotaMb": 40},
            format="json",
        )
        assert response.status_code == 201, response.content
        ids[local_part] = response.json()["id"]
    assert not _failed_jobs(), _failed_jobs()
    token, bob_token = f"purge-{secrets.token_hex(8)}", f"keep-{secrets.token_hex(8)}"
    _send(f, f"alice@{DOMAIN}", token)
    _send(f, f"bob@{DOMAIN}", bob_token)
    maildir = f"/var/mail/vhosts/{DOMAIN}/alice/Maildir"
    _wait_in_node(f, f"{maildir}/new", token)
    _wait_in_node(f, f"/var/mail/vhosts/{DOMAIN}/bob/Maildir/new", bob_token)

    response = client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")
    assert response.status_code == 202, response.content
    snapshot = Snapshot.objects.get(domain_id=domain_id)

    # 1. To the S3 target: an encrypted tar and its encrypted .sha256.
    target = backup_actions.create_target(
        actor=None,
        customer=cast.ministry,
        name="S3",
        kind="s3",
        s3_endpoint=s3_server.url,
        s3_bucket="backups",
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
    )
    to_s3 = _export(client, {"mailbox": ids["alice"], "target": target.pk})
    driver = drivers.driver_for(BackupTarget.objects.get(pk=target.pk))
    tar = b"".join(drivers.get_decrypted(driver, to_s3.object_name))
    assert hashlib.sha256(tar).hexdigest() == to_s3.sha256
    assert _members_with(tar, token) and all(
        m.startswith("alice/Maildir/") for m in _members_with(tar, token)
    )
    assert not _members_with(tar, bob_token)
    line = b"".join(drivers.get_decrypted(driver, f"{to_s3.object_name}.sha256")).decode()
    assert line.split()[0] == to_s3.sha256
    fetched = Path(settings.VAR_DIR) / "fetched.tar"
    call_command("export_fetch", str(to_s3.pk), str(fetched), stdout=io.StringIO())
    assert fetched.read_bytes() == tar
    stored = list((s3_server.root / "backups").rglob("*.tar*"))
    assert len(stored) == 2 and all(token.encode() not in p.read_bytes() for p in stored)

    # 2. To the controller, downloaded through the API.
    local = _export(client, {"mailbox": ids["alice"]})
    response = client.get(f"/api/v1/backup/exports/{local.pk}/download/")
    assert response.status_code == 200
    tar = b"".join(response.streaming_content)
    assert hashlib.sha256(tar).hexdigest() == local.sha256 == response["X-Checksum-SHA256"]
    assert _members_with(tar, token)
    controller_file = export_mod.file_path(local)
    assert token.encode() not in controller_file.read_bytes()

    # 3. From the snapshot (after alice's message is gone from the live Maildir), and of
    # the whole domain: the snapshot still has it, the domain tar has both mailboxes.
    f.in_node(IMAP, ["sh", "-c", f'grep -rl -- "{token}" {maildir} | xargs rm -f'])
    old = _export(client, {"mailbox": ids["alice"], "snapshot": snapshot.pk})
    tar = b"".join(client.get(f"/api/v1/backup/exports/{old.pk}/download/").streaming_content)
    assert _members_with(tar, token)
    listed = f.in_node(IMAP, ["zfs", "list", "-H", "-o", "name", "-r", pool]).stdout
    assert "ums-export-" not in listed  # the clone is gone
    whole = _export(client, {"domain": domain_id, "snapshot": snapshot.pk})
    tar = b"".join(client.get(f"/api/v1/backup/exports/{whole.pk}/download/").streaming_content)
    assert _members_with(tar, token) and _members_with(tar, bob_token)
    _send(f, f"alice@{DOMAIN}", token)  # a live copy again, for the purge to find
    _wait_in_node(f, f"{maildir}/new", token)

    # 4. The listing, and "no" changes nothing.
    output = _purge("no", monkeypatch)
    dataset = f"{pool}/mail/{DOMAIN}"
    assert f"ZFS snapshot {dataset}@{snapshot.name}" in output
    assert f"bob@{DOMAIN}" in output  # goes with the snapshot and the domain export
    assert output.count("export #") == 4 and "Nothing was changed." in output
    assert Mailbox.objects.filter(pk=ids["alice"]).exists() and not Purge.objects.exists()
    assert f.in_node(IMAP, ["grep", "-rq", "--", token, maildir], check=False).returncode == 0

    # 5. --yes: gone from the node, from every snapshot, the target and the controller.
    output = _purge(None, monkeypatch)
    assert "permanently purged" in output
    assert f.in_node(IMAP, ["test", "-e", maildir], check=False).returncode != 0
    assert (
        f.in_node(
            IMAP, ["grep", "-rq", "--", token, f"/var/mail/vhosts/{DOMAIN}"], check=False
        ).returncode
        != 0
    )
    snaps = f.in_node(IMAP, ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", pool])
    assert dataset not in snaps.stdout, snaps.stdout
    assert not Snapshot.objects.filter(dataset=dataset).exists()
    assert list((s3_server.root / "backups").rglob("*.tar*")) == []
    assert not any(Path(export_mod.exports_dir()).iterdir())
    assert set(Export.objects.values_list("status", flat=True)) == {Export.PURGED}
    assert not Mailbox.objects.filter(pk=ids["alice"]).exists()
    assert Mailbox.objects.filter(pk=ids["bob"]).exists()
    assert f.in_node(IMAP, ["grep", "-rq", "--", bob_token, f"/var/mail/vhosts/{DOMAIN}/bob"])
    done = AuditRecord.objects.get(action="backup.purge.done")
    assert done.object_repr == f"alice@{DOMAIN}" and done.changes["permanently_purged"]
    assert token not in str(done.changes)  # names of copies, never content

    # 6. Again: nothing left to do, and it says so without failing.
    output = _purge(None, monkeypatch)
    assert "0 copies destroyed" in output

    # 7. The whole domain, interrupted by a copy holder that fails once (an unreachable
    # target), then finished by running the same command again.
    response = client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")
    assert response.status_code == 202, response.content
    flaky = _FlakyHolder()
    monkeypatch.setitem(holders._HOLDERS, flaky.name, flaky)
    with pytest.raises(CommandError, match="Run the same command again"):
        call_command("purge_domain", DOMAIN, "--permanent", "--yes", stdout=io.StringIO())
    assert Purge.objects.filter(domain_name=DOMAIN, finished_at__isnull=True).exists()
    domain_dir = f"/var/mail/vhosts/{DOMAIN}"
    assert f.in_node(IMAP, ["test", "-e", f"{domain_dir}/bob"], check=False).returncode != 0
    out = io.StringIO()
    call_command("purge_domain", DOMAIN, "--permanent", "--yes", stdout=out)
    assert "Resuming the purge" in out.getvalue() and "permanently purged" in out.getvalue()
    assert flaky.destroyed
    listed = f.in_node(IMAP, ["zfs", "list", "-H", "-t", "all", "-o", "name", "-r", pool])
    assert dataset not in listed.stdout, listed.stdout
    assert f.in_node(IMAP, ["test", "-e", domain_dir], check=False).returncode != 0
    assert not Domain.objects.filter(name=DOMAIN).exists()
    assert not Purge.objects.filter(finished_at__isnull=True).exists()
    assert AuditRecord.objects.filter(action="backup.purge.done", object_repr=DOMAIN).exists()


class _FlakyHolder:
    """A copy holder whose first destroy fails, as an unreachable target would."""

    name = "flaky-test-holder"

    def __init__(self) -> None:
        self.failed = self.destroyed = False

    def find(self, domain, local_part):
        if self.destroyed:
            return []
        return [holders.HeldCopy(holder=self.name, description="a copy on a flaky target")]

    def destroy(self, copy, domain, local_part, log) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("target unreachable")
        self.destroyed = True
