"""The snapshot pass sweeps what killed restore and archive runs left on a real IMAP node
(zfs-fuse in the node's namespace, the pass as a job over SSH): the clone of a given-up
restore (still mounted, an orphaned reader holding it busy as a killed run's ``tar``
would) and of a failed archive pass are destroyed and audited, their snapshot is no
longer pinned, and empty mount folders of finished or unknown jobs are removed; the
clone and folder of a running restore, fresh folders, non-empty ones and other pools'
are kept. The pass's result counts what was swept."""

from __future__ import annotations

import contextlib
import datetime
import subprocess
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditRecord
from backup import restore_run
from backup.models import Snapshot
from backup.offnode_actions import COPY_JOB
from backup.restore import RESTORE_JOB
from deploy.nodes import session
from tests.backup.test_snapshots_node import store_fleet  # noqa: F401  (fixture)
from tests.converge.conftest import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    zone,
)
from tests.converge.fleet import Fleet
from tests.converge.test_mail_store import IMAP, PASSWORD, _failed_jobs
from tests.fixtures import Cast, token_client
from ums import jobs
from ums.models import Job

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "sweep.example"
RESTORE_ROOT, ARCHIVE_ROOT = "/var/lib/ums-restore", "/var/lib/ums-archive"
# Job ids far above this test's own, so leftovers of other test runs sharing these
# folders on this machine are never taken for ours (and ours never for theirs).
BASE_ID = 9_700_000


def _job(pk: int, kind: str, status: str, ended_hours_ago: float | None = None) -> Job:
    finished = None
    if ended_hours_ago is not None:
        finished = timezone.now() - datetime.timedelta(hours=ended_hours_ago)
    return Job.objects.create(pk=pk, kind=kind, title=kind, status=status, finished_at=finished)


def _old_folder(f: Fleet, path: str, *, empty: bool = True) -> None:
    f.in_node(IMAP, ["mkdir", "-p", path])
    if not empty:
        f.in_node(IMAP, ["touch", f"{path}/extracted"])
    f.in_node(IMAP, ["touch", "-d", "2 hours ago", path])


def snapshot_pass(client: Any, domain_id: int) -> Job:
    """A snapshot pass of the domain's node ("Snapshot now"), run as its job over SSH."""
    response = client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["id"])


def snapshotted_domain(client: Any, cast: Cast) -> tuple[int, Snapshot]:
    """The domain (its dataset on the node, by converge) with a mailbox and a snapshot."""
    jobs.load_handlers()
    wanted = {"name": DOMAIN, "customer": cast.ministry.pk}
    made = client.post("/api/v1/mail/domains/", wanted, format="json")
    assert made.status_code == 201, made.content
    box = {"domain": made.json()["id"], "localPart": "alice", "password": PASSWORD}
    added = client.post("/api/v1/mail/mailboxes/", {**box, "quotaMb": 20}, format="json")
    assert added.status_code == 201, added.content
    assert not _failed_jobs(), _failed_jobs()
    domain_id = made.json()["id"]
    assert snapshot_pass(client, domain_id).status == Job.SUCCEEDED
    return domain_id, Snapshot.objects.get(domain_id=domain_id, tier="manual")


def _exists(f: Fleet, path: str) -> bool:
    return f.in_node(IMAP, ["test", "-d", path], check=False).returncode == 0


def test_snapshot_pass_sweeps_leftovers_of_dead_runs_and_keeps_a_running_ones(
    cast: Cast,
    store_fleet: Fleet,  # noqa: F811
) -> None:
    f, pool = store_fleet, store_fleet.pools[IMAP]
    client = token_client(cast.sub_admin)
    domain_id, snap = snapshotted_domain(client, cast)
    origin = f"{snap.dataset}@{snap.name}"

    given_up = _job(BASE_ID + 1, RESTORE_JOB, Job.FAILED, ended_hours_ago=2)
    running = _job(BASE_ID + 2, RESTORE_JOB, Job.RUNNING)
    archive_failed = _job(BASE_ID + 3, COPY_JOB, Job.FAILED, ended_hours_ago=2)
    with session(f.nodes[IMAP]) as conn:
        # As the killed runs left them: made by the restore's own code.
        dead_mount = restore_run.ensure_clone(conn, snap, given_up.pk)
        live_mount = restore_run.ensure_clone(conn, snap, running.pk)
    # The running restore's clone, unmounted for a moment: its folder is empty but in use.
    f.in_node(IMAP, ["zfs", "unmount", f"{pool}/ums-restore-{running.pk}"])
    f.in_node(IMAP, ["touch", "-d", "2 hours ago", live_mount])
    archive_clone = f"{pool}/ums-archive-{archive_failed.pk}"
    archive_mount = f"{ARCHIVE_ROOT}/ums-archive-{archive_failed.pk}"
    options = ["-o", "readonly=on", "-o", f"mountpoint={archive_mount}"]
    f.in_node(IMAP, ["zfs", "clone", *options, origin, archive_clone])
    # A killed pass's reader still holds the dead restore's clone busy.
    hold = ["sh", "-c", 'cd "$1" && exec sleep 600', "sh", dead_mount]
    reader = subprocess.Popen(
        ["nsenter", "-t", str(f.tnodes[IMAP].pid), "-m", *hold],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    folder = {
        "gone restore": f"{RESTORE_ROOT}/{pool}-ums-restore-{BASE_ID + 10}",
        "gone archive": f"{ARCHIVE_ROOT}/ums-archive-{BASE_ID + 11}",
        "gone staging": f"{ARCHIVE_ROOT}/restore-{BASE_ID + 12}",
        "full staging": f"{ARCHIVE_ROOT}/restore-{BASE_ID + 13}",
        "other pool": f"{RESTORE_ROOT}/{pool}x-ums-restore-{BASE_ID + 14}",
        "fresh": f"{RESTORE_ROOT}/{pool}-ums-restore-{BASE_ID + 15}",
    }
    swept_folders = [folder[k] for k in ("gone restore", "gone archive", "gone staging")]
    try:
        for path in [*swept_folders, folder["other pool"]]:
            _old_folder(f, path)
        _old_folder(f, folder["full staging"], empty=False)
        f.in_node(IMAP, ["mkdir", "-p", folder["fresh"]])

        job = snapshot_pass(client, domain_id)
        assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
        swept = job.result["swept"]
        assert swept["clones"] == 2 and not swept["errors"], (swept, job.log)
        assert swept["folders"] >= 3, (swept, job.log)  # others' old leftovers may add

        names = f.in_node(IMAP, ["zfs", "list", "-H", "-o", "name", "-r", pool]).stdout.split()
        assert f"{pool}/ums-restore-{given_up.pk}" not in names
        assert archive_clone not in names
        assert f"{pool}/ums-restore-{running.pk}" in names  # its job runs: kept
        with contextlib.suppress(subprocess.TimeoutExpired):
            reader.wait(timeout=5)
        assert reader.returncode is not None, job.log  # the orphaned reader was stopped
        for path in [dead_mount, archive_mount, *swept_folders]:
            assert not _exists(f, path), path
        for path in [live_mount, folder["full staging"], folder["other pool"], folder["fresh"]]:
            assert _exists(f, path), path
        # The running restore goes on with its clone.
        with session(f.nodes[IMAP]) as conn:
            assert restore_run.ensure_clone(conn, snap, running.pk) == live_mount

        records = AuditRecord.objects.filter(action="backup_clone.swept")
        assert sorted(r.changes["clone"] for r in records) == sorted(
            [f"{pool}/ums-restore-{given_up.pk}", archive_clone]
        )
        assert {r.changes["job_status"] for r in records} == {Job.FAILED}
        assert {r.object_id for r in records} == {str(f.nodes[IMAP].pk)}

        # Once its job ends, the next pass (past the grace) takes the last clone too;
        # nothing pins the snapshot any more.
        Job.objects.filter(pk=running.pk).update(
            status=Job.SUCCEEDED, finished_at=timezone.now() - datetime.timedelta(hours=1)
        )
        job = snapshot_pass(client, domain_id)
        assert job.result["swept"]["clones"] == 1, job.log
        assert not _exists(f, live_mount)
        f.in_node(IMAP, ["zfs", "destroy", origin])
    finally:
        reader.kill()
        for path in folder.values():
            f.in_node(IMAP, ["rm", "-rf", "--", path], check=False)
