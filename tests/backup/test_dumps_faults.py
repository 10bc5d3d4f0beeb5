"""A dump killed midway: the real Celery worker (prefork, Redis broker) is SIGKILLed while
it writes a dump to a directory standing in for an NFS mount (no NFS server or client can
run here). Until the manifest is written the dump is invisible; after the worker comes
back, the reconciler (beat) runs the job again and it leaves one complete dump whose
every checksum matches, restorable into an empty database. Nothing is repaired by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backup import dumps
from backup.drivers import driver_for
from tests.fixtures import Cast, token_client
from tests.harness.worker import celery_stack, wait_for
from ums.models import Job

from .test_dumps import _drill, drill_db, nfs_target  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

STALE = 6


def test_a_worker_killed_mid_dump_heals_into_one_complete_dump(
    cast: Cast,
    tmp_path: Path,
    settings,
    drill_db: str,  # noqa: F811
) -> None:
    settings.UMS_JOB_STALE_SECONDS = STALE
    export = tmp_path / "nfs-export"
    export.mkdir()
    target = nfs_target(cast, export)
    env = {
        "UMS_CELERY_IMPORTS": "tests.backup.dump_slow",
        "UMS_JOB_STALE_SECONDS": str(STALE),
        "UMS_RECONCILE_INTERVAL": "1",
    }
    with celery_stack(tmp_path, env=env) as (worker, _beat):
        response = token_client(cast.root_admin).post("/api/v1/backup/dumps/now/")
        assert response.status_code == 202, response.content
        job_id = response.json()["id"]
        folder = wait_for(
            lambda: (
                next(iter((export / "dumps").glob("ums-dump-*")), None)
                if (export / "dumps").is_dir()
                else None
            ),
            timeout=60,
            what="the dump folder on the target",
        )
        wait_for(lambda: (folder / "database.pgdump").exists(), timeout=60, what="the first object")
        worker.kill()
        assert not (folder / dumps.MANIFEST).exists()
        # Cut short: nothing listed, nothing restorable.
        driver = driver_for(target)
        assert dumps.read_listing(driver).complete == {}

        worker.restart()
        job = wait_for(
            lambda: Job.objects.filter(pk=job_id, status__in=(Job.SUCCEEDED, Job.FAILED)).first(),
            timeout=120,
            what="the dump job to finish after the restart",
        )
        assert job.status == Job.SUCCEEDED, (job.error, job.log, worker.log_tail())
        assert job.attempts >= 2

    listing = dumps.read_listing(driver)
    assert list(listing.complete) == [folder.name] and listing.partial == {}
    assert dumps.verify(driver, folder.name, listing.complete[folder.name]) == []
    assert "Restore drill passed" in _drill(target, drill_db)
