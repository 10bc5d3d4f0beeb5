"""Crash safety of off-node copies on real parts: a real Celery worker (tests/harness/worker.py)
runs the copy of a 100 MB domain dataset from an IMAP node to the backup node (zfs-fuse
pools in sshd namespaces) and is SIGKILLed while the stream flows. ZFS discards the cut
receive; the reconciler hands the job to the restarted worker, which sends again from the
last common snapshot (none: a full stream) and the copy is identical to the source.

The target here is a plain directory standing in for an NFS mount (no NFS server or
client can run on these machines); an object a cut pass left behind without a manifest
entry is deleted by the next pass, and the manifest's chain, received into a fresh
dataset, yields the source's snapshot (same GUID).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import paramiko
import pytest
from django.db import transaction

from backup import offnode, offnode_actions, rebuild
from backup.drivers.nfs import NfsTarget
from backup.models import BackupTarget
from backup.models_offnode import OffnodeSetting
from deploy.nodes import session
from deploy.services import registry
from deploy.services.zfs import SERVICE as ZFS
from servers.models import Zone
from tests.converge.conftest import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    zone,
)
from tests.converge.fleet import Fleet, fleet, new_pool_name
from tests.converge.test_mail_store import PASSWORD
from tests.fixtures import Cast, token_client
from tests.harness.worker import celery_stack, wait_for
from ums.models import Job

from .test_offnode_node import _guid, _snaps

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "offfault.example"
A, SMTP, BACKUP = 0, 1, 2
STALE = 6


@pytest.fixture
def fault_fleet(
    tmp_path_factory: pytest.TempPathFactory,
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
    settings.UMS_JOB_STALE_SECONDS = STALE
    roles = [["imap"], ["smtp"], ["backup"]]
    with fleet(
        tmp_path_factory, controller_pkey, zone, cast, roles, zfs={A: pool, BACKUP: backup_pool}
    ) as f:
        yield f


def _receiving(f: Fleet) -> bool:
    found = f.in_node(BACKUP, ["pgrep", "-f", "zfs receive"], check=False)
    return found.returncode == 0


def test_worker_killed_mid_stream_then_the_next_run_completes(
    cast: Cast, fault_fleet: Fleet, tmp_path: Path, settings
) -> None:
    f = fault_fleet
    pool, backup_pool = f.pools[A], f.pools[BACKUP]
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
    source = f"{pool}/mail/{DOMAIN}"
    # The converge that creates the Maildir may run as the follow-up of the approval's
    # (coalesced, not inside this request): wait for it rather than race it.
    maildir = f"/var/mail/vhosts/{DOMAIN}/alice/Maildir/cur"
    wait_for(
        lambda: f.in_node(A, ["test", "-d", maildir], check=False).returncode == 0,
        timeout=90,
        interval=0.5,
        what="alice's Maildir on the IMAP node",
    )
    # 100 MB that do not compress: the stream takes long enough to be cut half-way.
    f.in_node(
        A,
        [
            "dd",
            "if=/dev/urandom",
            f"of=/var/mail/vhosts/{DOMAIN}/alice/Maildir/cur/big",
            "bs=1M",
            "count=100",
        ],
    )
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
        node=f.nodes[A],
        customer_path=f.nodes[A].customer_path,
        backup_node=f.nodes[BACKUP],
        backup_dataset=f"{backup_pool}/copies",
        target=target,
    )
    copy = f"{backup_pool}/copies/{DOMAIN}"
    # What an earlier pass cut before its manifest left on the target.
    junk = nfs_root / "ums-offnode" / DOMAIN / "c20260101T000000Z" / "00000-junk.zfs"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"partial")

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
        wait_for(lambda: _receiving(f), timeout=60, what="zfs receive on the backup node")
        worker.kill()
        # The cut stream is refused and discarded: no copy, no receive left running.
        wait_for(lambda: not _receiving(f), timeout=30, what="the cut receive to end")
        assert f.in_node(BACKUP, ["zfs", "list", copy], check=False).returncode != 0
        listed = f.in_node(BACKUP, ["zfs", "list", "-H", "-o", "name", "-r", backup_pool])
        assert "recv" not in listed.stdout, listed.stdout
        job.refresh_from_db()
        assert job.status != Job.SUCCEEDED
        worker.restart()

        def finished() -> bool:
            job.refresh_from_db()
            return job.status in (Job.SUCCEEDED, Job.FAILED)

        wait_for(finished, timeout=180, what="the copy job to finish after the restart")
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert job.attempts >= 2
    snaps = _snaps(f, A, source)
    assert snaps and _snaps(f, BACKUP, copy) == snaps
    assert _guid(f, BACKUP, f"{copy}@{snaps[-1]}") == _guid(f, A, f"{source}@{snaps[-1]}")

    # The target: the leftover is gone, the manifest commits one full stream, and that
    # stream received elsewhere is the source's snapshot.
    assert not junk.exists()
    driver = NfsTarget(str(nfs_root))
    with session(f.nodes[BACKUP]) as conn:
        got = rebuild.receive_from_target(conn, driver, DOMAIN, f"{backup_pool}/fromtarget")
    assert got == [snaps[-1]]
    assert _guid(f, BACKUP, f"{backup_pool}/fromtarget@{snaps[-1]}") == _guid(
        f, A, f"{source}@{snaps[-1]}"
    )

    # The receiving side dies mid-stream (its zfs receive killed): the relay reports it
    # instead of hanging, the copy stays at its last snapshot, the sender is not left
    # running, and the next pass sends the increment again.
    # Pool space. -f: the received dataset is mounted, and zfs-fuse answers "busy" while
    # its mount is still settling.
    wait_for(
        lambda: (
            f.in_node(
                BACKUP, ["zfs", "destroy", "-r", "-f", f"{backup_pool}/fromtarget"], check=False
            ).returncode
            == 0
        ),
        timeout=30,
        interval=1,
        what="the dataset received from the target destroyed",
    )
    f.in_node(
        A,
        [
            "dd",
            "if=/dev/urandom",
            f"of=/var/mail/vhosts/{DOMAIN}/alice/Maildir/cur/big2",
            "bs=1M",
            "count=40",
        ],
    )
    response = client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")
    assert Job.objects.get(pk=response.json()["id"]).status == Job.SUCCEEDED
    newest = _snaps(f, A, source)[-1]
    pid = f.tnodes[BACKUP].pid
    killer = subprocess.Popen(
        [
            "nsenter",
            "-t",
            str(pid),
            "-m",
            "-u",
            "-n",
            "sh",
            "-c",
            'until pkill -9 -f "zfs [r]eceive"; do sleep 0.02; done',
        ]
    )
    try:
        with session(f.nodes[A]) as src, session(f.nodes[BACKUP]) as dst:
            started = time.monotonic()
            with pytest.raises(Exception, match=r"stopped reading|exited"):
                offnode.copy_to_node(src, dst, source, copy, {"enabled": False})
            assert time.monotonic() - started < 120
    finally:
        killer.wait(timeout=30)
    assert _snaps(f, BACKUP, copy) == snaps  # the cut increment was discarded
    deadline = time.monotonic() + 30
    while f.in_node(A, ["pgrep", "-f", "zfs send"], check=False).returncode == 0:
        assert time.monotonic() < deadline, "zfs send left running on the IMAP node"
        time.sleep(0.2)
    with session(f.nodes[A]) as src, session(f.nodes[BACKUP]) as dst:
        result = offnode.copy_to_node(src, dst, source, copy, {"enabled": False})
    assert result["sent"] == {"base": snaps[-1], "snapshot": newest}
    assert _guid(f, BACKUP, f"{copy}@{newest}") == _guid(f, A, f"{source}@{newest}")
