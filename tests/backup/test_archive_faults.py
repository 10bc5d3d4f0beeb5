"""Crash safety of Maildir archive copies on real parts: a real Celery worker
(tests/harness/worker.py) archives a 100 MB domain from an IMAP node (zfs-fuse pool in an
sshd namespace) to a target and is SIGKILLed while ``tar`` streams. No half archive is
ever listed (the manifest is written last); the reconciler hands the job to the
restarted worker, which removes the clone the dead pass left, archives again from the
start and commits one whole archive whose checksum matches. The same for an increment:
killed mid-upload, the manifest names only objects that exist; the next run commits it,
about the new mail only. Then the message is lost on
the node and restored from the archive, the worker killed again while ``tar -x`` runs on
the node: the resumed job brings it back into "Restored <date>" exactly once.

The target is a plain directory standing in for an NFS mount (no NFS server or client can
run on these machines).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from django.db import transaction

from backup import crypto, offnode_actions
from backup.models import BackupTarget
from backup.models_offnode import OffnodeCopy, OffnodeSetting
from tests.converge.test_mail_store import IMAP, PASSWORD
from tests.fixtures import Cast, token_client
from tests.harness.worker import celery_stack, wait_for
from ums.models import Job

from .test_snapshots_node import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    store_fleet,
    zone,
)

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "archfault.example"
STALE = 6


def _archiving(f) -> bool:
    found = f.in_node(IMAP, ["pgrep", "-f", "tar -C /var/lib/ums-archive"], check=False)
    return found.returncode == 0


def test_worker_killed_mid_archive_then_the_next_run_completes(
    cast: Cast,
    store_fleet,  # noqa: F811
    tmp_path: Path,
    settings,
) -> None:
    f = store_fleet
    settings.UMS_JOB_STALE_SECONDS = STALE
    client = token_client(cast.sub_admin)
    response = client.post(
        "/api/v1/mail/domains/", {"name": DOMAIN, "customer": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    domain_id = response.json()["id"]
    response = client.post(
        "/api/v1/mail/mailboxes/",
        {"domain": domain_id, "localPart": "alice", "password": PASSWORD, "quotaMb": 400},
        format="json",
    )
    assert response.status_code == 201, response.content
    maildir = f"/var/mail/vhosts/{DOMAIN}/alice/Maildir"
    # 100 MB that do not compress, so the tar takes long enough to be cut half-way, and a
    # Junk folder the domain's policy leaves out.
    f.in_node(IMAP, ["dd", "if=/dev/urandom", f"of={maildir}/cur/big", "bs=1M", "count=100"])
    f.in_node(IMAP, ["mkdir", "-p", f"{maildir}/.Junk/cur"])
    # (Small: moving Junk out of the snapshots copies it within the 256 MB pool first.)
    f.in_node(IMAP, ["dd", "if=/dev/urandom", f"of={maildir}/.Junk/cur/spam", "bs=1M", "count=4"])
    response = client.patch(
        f"/api/v1/backup/exclusions/domains/{domain_id}/", {"folders": ["Junk"]}, format="json"
    )
    assert response.status_code == 200, response.content
    response = client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")
    assert Job.objects.get(pk=response.json()["id"]).status == Job.SUCCEEDED
    nfs_root = tmp_path / "nfs"
    nfs_root.mkdir()
    target = BackupTarget.objects.create(
        customer=cast.ministry,
        customer_path=cast.ministry.path,
        name="nfs",
        kind="nfs",
        nfs_path=str(nfs_root),
    )
    setting = OffnodeSetting.objects.create(
        node=f.nodes[IMAP],
        customer_path=f.nodes[IMAP].customer_path,
        target=target,
        target_format=OffnodeSetting.MAILDIR,
    )
    folder = nfs_root / "ums-archive" / DOMAIN

    env = {
        "UMS_CELERY_IMPORTS": "tests.faults.worker_setup",
        "UMS_NODE_SETTINGS": json.dumps(settings.UMS_CONVERGE),
        "UMS_JOB_STALE_SECONDS": str(STALE),
        "UMS_RECONCILE_INTERVAL": "1",
    }
    celery_dir = tmp_path / "celery"
    celery_dir.mkdir()
    with celery_stack(celery_dir, env=env) as (worker, _beat):
        with transaction.atomic():
            job = offnode_actions.enqueue_copy(setting)
        wait_for(lambda: _archiving(f), timeout=60, what="tar of the snapshot clone")
        worker.kill()
        # Nothing committed: no manifest, no listed archive, no copy row.
        assert not (folder / "manifest.json").exists()
        assert not OffnodeCopy.objects.filter(domain_name=DOMAIN).exists()
        job.refresh_from_db()
        assert job.status != Job.SUCCEEDED
        worker.restart()

        def finished() -> bool:
            job.refresh_from_db()
            return job.status in (Job.SUCCEEDED, Job.FAILED)

        wait_for(finished, timeout=240, what="the copy job to finish after the restart")
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert job.attempts >= 2
    stored = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert len(stored) == 3 and "manifest.json" in stored, stored  # tar, index, manifest
    manifest = json.loads(crypto.decrypt_bytes((folder / "manifest.json").read_bytes()))
    (entry,) = manifest["archives"]
    data = crypto.decrypt_bytes((nfs_root / entry["name"]).read_bytes())
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    plain = tmp_path / "archive.tar"
    plain.write_bytes(data)
    with tarfile.open(plain) as tar:
        names = tar.getnames()
        assert tar.getmember("alice/Maildir/cur/big").size == 100 * 1024 * 1024
    assert not [n for n in names if ".Junk" in n]
    # The clone of the killed pass was destroyed by the next one.
    listed = f.in_node(IMAP, ["zfs", "list", "-H", "-o", "name"]).stdout
    assert "ums-archive" not in listed, listed
    assert OffnodeCopy.objects.get(domain_name=DOMAIN).kind == OffnodeCopy.ARCHIVE

    # An increment (50 MB of new mail), the worker killed while its tar streams: the
    # manifest still names only the full archive, and every object it names is there;
    # the next run deletes the cut upload and commits the increment, about the new mail.
    f.in_node(IMAP, ["dd", "if=/dev/urandom", f"of={maildir}/cur/big2", "bs=1M", "count=50"])
    response = client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")
    assert Job.objects.get(pk=response.json()["id"]).status == Job.SUCCEEDED
    archives = folder.parent.parent
    celery_dir = tmp_path / "celery-inc"
    celery_dir.mkdir()
    with celery_stack(celery_dir, env=env) as (worker, _beat):
        with transaction.atomic():
            job = offnode_actions.enqueue_copy(setting)
        wait_for(lambda: _archiving(f), timeout=60, what="tar of the increment")
        worker.kill()
        cut = json.loads(crypto.decrypt_bytes((folder / "manifest.json").read_bytes()))
        assert [a["name"] for a in cut["archives"]] == [entry["name"]]
        for name in (entry["name"], entry["index"]):
            assert (archives / name).exists()
        worker.restart()

        def copied() -> bool:
            job.refresh_from_db()
            return job.status in (Job.SUCCEEDED, Job.FAILED)

        wait_for(copied, timeout=240, what="the increment to finish after the restart")
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert job.attempts >= 2
    manifest = json.loads(crypto.decrypt_bytes((folder / "manifest.json").read_bytes()))
    first, inc = manifest["archives"]
    assert first == entry and inc["kind"] == "incremental" and inc["chain"] == entry["name"]
    stored = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert len(stored) == 5, stored  # two tars, two indexes, the manifest: no leftovers
    size = (archives / inc["name"]).stat().st_size
    assert 50 * 1024 * 1024 < size < 60 * 1024 * 1024, size  # not the 100 MB base again
    # Room for the restore below: the increment's mail and snapshot go.
    f.in_node(IMAP, ["rm", f"{maildir}/cur/big2"])
    dataset = f"{f.pools[IMAP]}/mail/{DOMAIN}"
    f.in_node(IMAP, ["zfs", "destroy", f"{dataset}@{inc['snapshot']}"])

    # Restore alice from that archive, the worker killed while tar extracts on the node:
    # the resumed job extracts again, and the big message comes back once, whole.
    from backup import archive_restore
    from mail.models import Mailbox

    row = OffnodeCopy.objects.get(domain_name=DOMAIN)
    alice = Mailbox.objects.get(domain_id=domain_id, local_part="alice")
    # The message is lost on the node, and so is the snapshot (the pool is small: the
    # archive is the only copy left, and the restore needs the room).
    f.in_node(IMAP, ["rm", f"{maildir}/cur/big", f"{maildir}/.Junk/cur/spam"])
    dataset = f"{f.pools[IMAP]}/mail/{DOMAIN}"
    f.in_node(IMAP, ["zfs", "destroy", f"{dataset}@{entry['snapshot']}"])
    celery_dir = tmp_path / "celery2"
    celery_dir.mkdir()
    with celery_stack(celery_dir, env=env) as (worker, _beat):
        with transaction.atomic():
            job = archive_restore.start_archive_restore(
                actor=None, copy=row, mailbox=alice, snapshot=entry["snapshot"]
            )
        wait_for(lambda: _extracting(f), timeout=60, what="tar -x on the node")
        worker.kill()
        job.refresh_from_db()
        assert job.status != Job.SUCCEEDED
        worker.restart()

        def restored() -> bool:
            job.refresh_from_db()
            return job.status in (Job.SUCCEEDED, Job.FAILED)

        wait_for(restored, timeout=240, what="the restore to finish after the restart")
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert job.attempts >= 2
    (folder,) = job.result["folders"].values()
    found = f.in_node(IMAP, ["find", maildir, "-type", "f", "-size", "100M"]).stdout.splitlines()
    assert len(found) == 1 and found[0].startswith(f"{maildir}/.{folder}/cur/big"), found
    left = f.in_node(IMAP, ["ls", "-A", "/var/lib/ums-archive"], check=False).stdout
    assert "restore-" not in left, left


def _extracting(f) -> bool:
    found = f.in_node(IMAP, ["pgrep", "-f", "tar -x -C /var/lib/ums-archive/restore-"], check=False)
    return found.returncode == 0
