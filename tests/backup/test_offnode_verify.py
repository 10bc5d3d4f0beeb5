"""Verification of off-node copies against a real S3 server (``rclone serve s3``): a
stream copy and a chain of Maildir archives (made by the same find/tar a pass runs) are
read back through the API's "verify" actions; a byte flipped in an object on the S3
server's disk, or a tar that no longer holds what its index names, is reported as failed
with the object's name (never as ok), stored on the copy, audited, alerted on the node
and shown on the portal; the schedule starts a verification when the setting's days have
passed. No node is involved: verification touches none."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import pytest
from django.utils import timezone

from audit.models import AuditRecord
from backup import actions, drivers, offnode, offnode_verify_run
from backup import archive_chain as chain
from backup import offnode_archive as oa
from backup.exclusions import Exclusions
from backup.models import BackupTarget
from backup.models_offnode import OffnodeCopy, OffnodeSetting
from servers.models import NodeAlert
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain
from ums.models import Job

from .servers import S3Server
from .test_archive_chain import DOMAIN, _archive, _write
from .test_portal import portal
from .test_snapshots import _imap_node

pytestmark = pytest.mark.django_db(transaction=True)  # jobs run after commit
BUCKET, PREFIX = "backups", "verify"
STREAMS = "streams.example"


def s3_target(cast: Cast, server: S3Server, prefix: str = PREFIX) -> BackupTarget:
    return actions.create_target(
        actor=None,
        customer=cast.government,
        name=f"S3 {prefix}",
        kind="s3",
        s3_endpoint=server.url,
        s3_bucket=BUCKET,
        s3_prefix=prefix,
        s3_access_key=server.access_key,
        s3_secret_key=server.secret_key,
    )


def stream_copy(driver: drivers.Target, domain_name: str, parts: list[bytes]) -> None:
    """A stream chain as :func:`offnode.copy_to_target` stores it (the objects, then the
    manifest with each plain stream's SHA-256 and size)."""
    objects = []
    for seq, data in enumerate(parts):
        name = f"{offnode.PREFIX}/{domain_name}/c20261201T000000Z/{seq:05d}-ums-manual-{seq}.zfs"
        pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)]
        drivers.put_encrypted(driver, name, pieces)
        objects.append(
            {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        )
    manifest = {"version": 1, "domain": domain_name, "chains": [{"id": "c1", "objects": objects}]}
    offnode._write_manifest(driver, manifest)


def archive_chain_copy(driver: drivers.Target, root: Path) -> list[dict]:
    """A full archive and two increments of a real Maildir, as a pass stores them."""
    _write(root, "alice/Maildir/cur/1000.a:2,S", b"first message\n")
    _write(root, "alice/Maildir/.Sent/cur/1001.b:2,S", b"sent message\n")
    archives: list[dict] = []
    _archive(root, driver, archives, 1, Exclusions())
    _write(root, "alice/Maildir/new/1002.c", b"second message\n")
    _archive(root, driver, archives, 2, Exclusions())
    _write(root, "alice/Maildir/new/1003.d", b"third message\n" * 1000)
    _archive(root, driver, archives, 3, Exclusions())
    oa._write_manifest(driver, {"version": 1, "domain": DOMAIN, "archives": archives})
    return archives


@pytest.fixture
def copies(cast: Cast, s3_server: S3Server, tmp_path: Path):
    node = _imap_node(cast)
    target = s3_target(cast, s3_server, prefix=f"v{tmp_path.name[-12:].replace('_', '')}")
    setting = OffnodeSetting.objects.create(
        node=node, customer_path=node.customer_path, target=target
    )
    driver = drivers.driver_for(target)
    stream_copy(driver, STREAMS, [b"full stream " * 50000, b"incremental " * 3000])
    archives = archive_chain_copy(driver, tmp_path / "maildirs")
    rows = {}
    for name, kind in ((STREAMS, OffnodeCopy.TARGET), (DOMAIN, OffnodeCopy.ARCHIVE)):
        domain = make_domain(cast.ministry, name)
        rows[kind] = OffnodeCopy.objects.create(
            domain=domain,
            domain_name=name,
            customer_path=domain.customer_path,
            kind=kind,
            source_node=node,
            target=target,
            location="manifest.json",
            snapshots=["ums-manual-1"],
            last_snapshot="ums-manual-1",
            copied_at=timezone.now(),
        )
    yield setting, rows, archives, driver
    driver.close()


def _on_disk(server: S3Server, target: BackupTarget, name: str) -> Path:
    return server.root / BUCKET / target.s3_prefix / name


def _verify_node(cast: Cast, setting: OffnodeSetting) -> Job:
    response = token_client(cast.sub_admin).post(
        f"/api/v1/backup/offnode-settings/{setting.pk}/verify/"
    )
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["id"])


def test_sound_copies_pass_and_a_flipped_byte_fails_naming_the_object(
    cast: Cast, copies, s3_server: S3Server
) -> None:
    setting, rows, archives, _driver = copies
    job = _verify_node(cast, setting)
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert job.result["verified"] == 2 and job.result["objects"] == 2 + 3
    api = token_client(cast.sub_admin).get(
        "/api/v1/backup/offnode-copies/", {"source_node": setting.node_id}
    )
    listed = {r["domainName"]: r for r in api.json()["results"]}
    assert listed[DOMAIN]["verifyOk"] is True and listed[STREAMS]["verifyOk"] is True
    assert listed[DOMAIN]["verifiedAt"] and listed[DOMAIN]["verifyMessage"] == ""
    assert AuditRecord.objects.filter(action="offnode_copy.verified").count() == 2
    assert AuditRecord.objects.filter(action="offnode_copy.verify_request").count() == 1

    # One byte of the middle increment's tar, on the S3 server's disk.
    tampered = archives[1]["name"]
    stored = _on_disk(s3_server, setting.target, tampered)
    original = stored.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    job = _verify_node(cast, setting)
    assert job.status == Job.FAILED and tampered in job.error
    rows[OffnodeCopy.ARCHIVE].refresh_from_db()
    rows[OffnodeCopy.TARGET].refresh_from_db()
    assert rows[OffnodeCopy.ARCHIVE].verify_ok is False
    assert tampered in rows[OffnodeCopy.ARCHIVE].verify_message
    assert "cannot be decrypted" in rows[OffnodeCopy.ARCHIVE].verify_message
    assert rows[OffnodeCopy.TARGET].verify_ok is True
    alert = NodeAlert.objects.get(node=setting.node, kind=offnode_verify_run.ALERT_KIND)
    assert alert.resolved_at is None and tampered in alert.message
    failed = AuditRecord.objects.filter(action="offnode_copy.verified").order_by("-id")
    assert any(r.changes.get("ok") is False and tampered in r.changes["error"] for r in failed)
    page = portal(cast.sub_admin).get("/backup/offnode/").content.decode()
    assert "verification failed" in page and tampered in page and "Verify copies" in page

    # Repaired (the object put back): the next verification passes and the alert goes.
    stored.write_bytes(original)
    assert _verify_node(cast, setting).status == Job.SUCCEEDED
    alert.refresh_from_db()
    assert alert.resolved_at is not None


def test_a_stream_object_changed_or_missing_fails_by_name(
    cast: Cast, copies, s3_server: S3Server
) -> None:
    _setting, rows, _archives, driver = copies
    first = f"{offnode.PREFIX}/{STREAMS}/c20261201T000000Z/00000-ums-manual-0.zfs"
    # Replaced by a well-encrypted object of other content: decrypts, hash differs.
    drivers.put_encrypted(driver, first, [b"not the stream"])
    second = f"{offnode.PREFIX}/{STREAMS}/c20261201T000000Z/00001-ums-manual-1.zfs"
    driver.delete(second)
    response = token_client(cast.sub_admin).post(
        f"/api/v1/backup/offnode-copies/{rows[OffnodeCopy.TARGET].pk}/verify/"
    )
    assert response.status_code == 202
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.FAILED
    copy = OffnodeCopy.objects.get(pk=rows[OffnodeCopy.TARGET].pk)
    assert copy.verify_ok is False
    assert f"{first}: SHA-256 or size does not match the manifest" in copy.verify_message
    assert f"{second}: missing" in copy.verify_message
    # Only that domain's copies were read.
    assert OffnodeCopy.objects.get(pk=rows[OffnodeCopy.ARCHIVE].pk).verified_at is None


def test_an_index_naming_files_no_tar_holds_fails(cast: Cast, copies) -> None:
    """A tar rewritten without a mailbox (hash recorded anew) while its index still names
    the mailbox's files: the point cannot be assembled, so the copy is not sound."""
    setting, rows, archives, driver = copies
    entry = archives[0]
    digest = oa._Digest()
    plain = drivers.get_decrypted(driver, entry["name"])
    drivers.put_encrypted(driver, entry["name"], digest.wrap(oa.without_mailbox(plain, "alice")))
    entry.update(sha256=digest.sha.hexdigest(), bytes=digest.size)
    oa._write_manifest(driver, {"version": 1, "domain": DOMAIN, "archives": archives})
    job = _verify_node(cast, setting)
    assert job.status == Job.FAILED
    copy = OffnodeCopy.objects.get(pk=rows[OffnodeCopy.ARCHIVE].pk)
    assert copy.verify_ok is False
    assert chain.index_name(entry["name"]) in copy.verify_message
    assert "are in no tar of the chain" in copy.verify_message


def test_verify_is_scoped_and_refuses_what_it_cannot_read(cast: Cast, copies) -> None:
    setting, rows, _archives, _driver = copies
    outsider = token_client(cast.sibling_admin)
    assert outsider.post(f"/api/v1/backup/offnode-settings/{setting.pk}/verify/").status_code == 404
    copy = rows[OffnodeCopy.TARGET]
    assert outsider.post(f"/api/v1/backup/offnode-copies/{copy.pk}/verify/").status_code == 404
    viewer = token_client(cast.ministry_viewer)
    assert viewer.post(f"/api/v1/backup/offnode-copies/{copy.pk}/verify/").status_code in (403, 404)
    OffnodeCopy.objects.filter(pk=copy.pk).update(kind=OffnodeCopy.NODE, target=None)
    response = token_client(cast.sub_admin).post(f"/api/v1/backup/offnode-copies/{copy.pk}/verify/")
    assert response.status_code == 400 and "backup target" in response.content.decode()
    assert not Job.objects.filter(kind=offnode_verify_run.VERIFY_JOB).exists()


def test_the_schedule_verifies_every_n_days_and_0_is_off(cast: Cast, copies) -> None:
    setting, _rows, _archives, _driver = copies
    node = setting.node
    now = timezone.now()
    assert offnode_verify_run.schedule(now)["verify_started"] == [node.hostname]
    job = Job.objects.get(kind=offnode_verify_run.VERIFY_JOB)
    assert job.status == Job.SUCCEEDED  # eager in tests
    assert offnode_verify_run.schedule(now)["verify_started"] == []
    later = now + datetime.timedelta(days=7, minutes=1)
    assert offnode_verify_run.schedule(later)["verify_started"] == [node.hostname]
    OffnodeSetting.objects.filter(pk=setting.pk).update(verify_every_days=0)
    assert offnode_verify_run.schedule(later + datetime.timedelta(days=30)) == {
        "verify_started": []
    }


def test_the_setting_validates_the_verify_days(cast: Cast, copies) -> None:
    setting, _rows, _archives, _driver = copies
    client = token_client(cast.sub_admin)
    url = f"/api/v1/backup/offnode-settings/{setting.pk}/"
    response = client.patch(url, {"verifyEveryDays": 400}, format="json")
    assert response.status_code == 400 and "verifyEveryDays" in response.json()["errors"]
    response = client.patch(url, {"verifyEveryDays": -1}, format="json")
    assert response.status_code == 400
    response = client.patch(url, {"verifyEveryDays": 0}, format="json")
    assert response.status_code == 200 and response.json()["verifyEveryDays"] == 0
    record = AuditRecord.objects.filter(action="offnode_setting.update").latest("id")
    assert record.changes["after"] == {"verify_every_days": 0}


def test_the_restore_form_says_full_or_increment_of_its_full_archives_date(
    cast: Cast, copies
) -> None:
    _setting, rows, _archives, _driver = copies
    names = [f"ums-daily-202612{day:02d}T0000Z" for day in range(1, 6)]
    kinds = ["full", "incremental", "incremental", "full", "incremental"]
    copy = rows[OffnodeCopy.ARCHIVE]
    OffnodeCopy.objects.filter(pk=copy.pk).update(
        snapshots=names, archive_kinds=dict(zip(names, kinds, strict=True))
    )
    page = portal(cast.sub_admin).get(f"/backup/offnode/copies/{copy.pk}/restore/")
    assert page.status_code == 200
    options = {
        o.split('"', 2)[1]: o.split(">", 1)[1].split("<", 1)[0]
        for o in page.content.decode().split("<option value=")[1:]
        if o.startswith('"ums-daily')
    }
    assert options[names[0]] == f"{names[0]} (full)"
    assert options[names[3]] == f"{names[3]} (full)"
    # Each increment names the full archive its chain starts from (by that one's date).
    assert options[names[1]].startswith(f"{names[1]} (increment of ")
    assert options[names[1]] == options[names[2]].replace(names[2], names[1])
    assert options[names[4]] != options[names[1]].replace(names[1], names[4])
    assert "2026" in options[names[4]] and "4" in options[names[4]].split("of", 1)[1]


def test_the_portal_form_checks_and_saves_the_verify_days(cast: Cast, copies) -> None:
    setting, _rows, _archives, _driver = copies
    client = portal(cast.sub_admin)
    url = f"/backup/offnode/{setting.node_id}/"
    kept = ("interval_minutes", "target_full_every", "target_keep_chains")
    values = {"enabled": "on", "target": setting.target_id}
    values.update({name: getattr(setting, name) for name in kept})
    response = client.post(url, {**values, "verify_every_days": "366"})
    assert response.status_code == 200
    assert "less than or equal to 365" in response.content.decode()
    assert client.post(url, {**values, "verify_every_days": "0"}).status_code == 302
    assert OffnodeSetting.objects.get(pk=setting.pk).verify_every_days == 0
    assert client.post(url, values).status_code == 302  # left out: the default
    assert OffnodeSetting.objects.get(pk=setting.pk).verify_every_days == 7
    response = client.post(f"/backup/offnode/{setting.node_id}/verify/")
    job = Job.objects.get(kind=offnode_verify_run.VERIFY_JOB)
    assert response["Location"] == f"/jobs/{job.pk}/" and job.status == Job.SUCCEEDED
