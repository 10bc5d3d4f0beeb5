"""Crash safety of "Verify copies" on real parts: a real Celery worker verifies a node's
two stream copies on a real S3 server (``rclone serve s3``) and is SIGKILLed while it
reads the second, 400 MB one. The first copy's result is already stored; the reconciler
hands the job to the restarted worker, which skips the copy verified before the kill and
finishes the other: the job succeeds, each copy read once to the end and marked ok."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone

from backup import drivers, offnode_verify_run
from backup.models_offnode import OffnodeCopy, OffnodeSetting
from tests.fixtures import Cast
from tests.harness.worker import celery_stack, wait_for, wait_for_job_end
from tests.mail.helpers import make_domain
from ums.models import Job

from .servers import S3Server
from .test_offnode_verify import s3_target, stream_copy
from .test_snapshots import _imap_node

pytestmark = pytest.mark.django_db(transaction=True)
STALE = 6
SMALL, BIG = "a-small.example", "b-big.example"
BIG_MB = 400


def _big_stream(driver: drivers.Target) -> None:
    """One 400 MB stream object (a random MiB repeated: encryption makes it all differ)."""
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    for _ in range(BIG_MB):
        digest.update(block)
    name = f"ums-offnode/{BIG}/c20261201T000000Z/00000-ums-manual-0.zfs"
    drivers.put_encrypted(driver, name, (block for _ in range(BIG_MB)))
    from backup import offnode

    entry = {"name": name, "sha256": digest.hexdigest(), "bytes": BIG_MB * len(block)}
    offnode._write_manifest(
        driver, {"version": 1, "domain": BIG, "chains": [{"id": "c1", "objects": [entry]}]}
    )


def test_worker_killed_mid_verification_then_the_job_finishes(
    cast: Cast, s3_server: S3Server, tmp_path: Path, settings
) -> None:
    settings.UMS_JOB_STALE_SECONDS = STALE
    node = _imap_node(cast)
    target = s3_target(cast, s3_server, prefix="fault")
    # Copies off: the worker's beat must not start copy passes against a node that is
    # not there; verification needs no node.
    OffnodeSetting.objects.create(
        node=node, customer_path=node.customer_path, target=target, enabled=False
    )
    driver = drivers.driver_for(target)
    stream_copy(driver, SMALL, [b"small stream " * 1000])
    _big_stream(driver)
    driver.close()
    rows = {}
    for name in (SMALL, BIG):
        domain = make_domain(cast.ministry, name)
        rows[name] = OffnodeCopy.objects.create(
            domain=domain,
            domain_name=name,
            customer_path=domain.customer_path,
            kind=OffnodeCopy.TARGET,
            source_node=node,
            target=target,
            location=f"ums-offnode/{name}/manifest.json",
            snapshots=["ums-manual-0"],
            last_snapshot="ums-manual-0",
            copied_at=timezone.now(),
        )

    env = {"UMS_JOB_STALE_SECONDS": str(STALE), "UMS_RECONCILE_INTERVAL": "1"}
    celery_dir = tmp_path / "celery"
    celery_dir.mkdir()
    with celery_stack(celery_dir, env=env) as (worker, _beat):
        with transaction.atomic():
            job = offnode_verify_run.enqueue_node(node)

        def small_done() -> bool:
            return OffnodeCopy.objects.get(pk=rows[SMALL].pk).verified_at is not None

        wait_for(small_done, timeout=60, interval=0.05, what="the small copy verified")
        worker.kill()
        job.refresh_from_db()
        big = OffnodeCopy.objects.get(pk=rows[BIG].pk)
        assert job.status == Job.RUNNING and big.verified_at is None, (job.status, job.log)
        first = OffnodeCopy.objects.get(pk=rows[SMALL].pk).verified_at
        worker.restart()
        wait_for_job_end(job, timeout=240, what="the verification to end after the restart")
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert job.attempts >= 2 and job.result["resumed_past"] == 1
    assert job.result["bytes"] == BIG_MB * 1024 * 1024  # the big one read once, whole
    small = OffnodeCopy.objects.get(pk=rows[SMALL].pk)
    big = OffnodeCopy.objects.get(pk=rows[BIG].pk)
    assert small.verified_at == first and small.verify_ok is True  # not read again
    assert big.verify_ok is True and big.verified_at > first
