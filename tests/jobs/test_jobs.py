"""Jobs: attributed, claimed once, progress and log recorded, run by a real Celery worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.urls import reverse

from audit.models import AuditRecord
from tests.api.contracts import ScopedEndpointContract
from tests.fixtures import Cast
from tests.jobs import handlers  # noqa: F401  (registers the test job kinds)
from ums import context, jobs
from ums.models import Job

ROOT = Path(__file__).resolve().parents[2]


def enqueue(kind: str, cast: Cast, **params: int) -> Job:
    with (
        context.acting(
            channel=context.CHANNEL_API, actor=cast.sub_admin, request_id="req-12345678"
        ),
        transaction.atomic(),
    ):
        return jobs.enqueue(
            kind, actor=cast.sub_admin, title="Test job", customer=cast.ministry, params=params
        )


class TestJobEndpoint(ScopedEndpointContract):
    basename = "job"
    model = Job
    can_delete = False

    def make_in_scope(self, cast: Cast) -> Job:
        return Job.objects.create(kind="x", title="in", customer_path=cast.ministry.path)

    def make_outside(self, cast: Cast) -> Job:
        return Job.objects.create(kind="x", title="out", customer_path=cast.shop.path)


@pytest.mark.django_db(transaction=True)
def test_job_runs_after_commit_with_progress_log_and_attribution(cast: Cast) -> None:
    job = enqueue("test.count", cast, n=4)
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED
    assert job.result == {"counted": 4}
    assert job.percent == 100
    assert "step 4" in job.log
    record = AuditRecord.objects.get(action="test.job_step")
    assert record.actor_id == cast.sub_admin.pk
    assert record.channel == "task"
    assert record.request_id == "req-12345678"


@pytest.mark.django_db(transaction=True)
def test_nothing_is_dispatched_when_the_transaction_rolls_back(cast: Cast) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        jobs.enqueue("test.count", actor=cast.sub_admin, title="never", customer=cast.ministry)
        raise RuntimeError
    assert not Job.objects.filter(title="never").exists()


@pytest.mark.django_db(transaction=True)
def test_failure_is_recorded(cast: Cast) -> None:
    job = enqueue("test.explode", cast)
    job.refresh_from_db()
    assert job.status == Job.FAILED
    assert "the node refused" in job.error


@pytest.mark.django_db
def test_a_claimed_job_is_not_run_twice(cast: Cast) -> None:
    job = Job.objects.create(kind="test.count", title="t", customer_path=cast.ministry.path)
    assert jobs.run(job.pk) == Job.SUCCEEDED
    assert jobs.run(job.pk) == "skipped"


@pytest.fixture
def celery_worker():
    """A real Celery worker process on the configured Redis broker, using the test database."""
    from ums.celery import app

    broker = app.conf.broker_url
    assert broker and broker.startswith("redis://"), "set CELERY_BROKER_URL (make test does)"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "UMS_TASKS_IN_PROCESS": "false",
        "UMS_CELERY_IMPORTS": "tests.jobs.handlers",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "ums",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
    )
    app.conf.task_always_eager = False
    try:
        yield proc
    finally:
        app.conf.task_always_eager = True
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_real_worker_runs_the_job(cast: Cast, celery_worker) -> None:
    job = enqueue("test.count", cast, n=2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_finished:
            break
        time.sleep(0.2)
    assert job.status == Job.SUCCEEDED, job.error
    assert job.result == {"counted": 2}


@pytest.mark.django_db
def test_job_api_shows_progress(cast: Cast) -> None:
    from tests.fixtures import token_client

    job = Job.objects.create(
        kind="x", title="half", customer_path=cast.ministry.path, progress_done=5, progress_total=10
    )
    data = token_client(cast.sub_admin).get(reverse("job-detail", args=[job.pk])).json()
    assert data["percent"] == 50
    assert data["status"] == "pending"


@pytest.mark.django_db
def test_a_job_abandoned_by_a_dead_worker_is_picked_up_again(cast: Cast) -> None:
    """acks_late redelivers the task after a worker dies; the stale claim lets it run."""
    import datetime

    from django.utils import timezone

    stale = timezone.now() - jobs.stale_after() - datetime.timedelta(seconds=1)
    job = Job.objects.create(
        kind="test.count",
        title="t",
        customer_path=cast.ministry.path,
        status=Job.RUNNING,
        started_at=stale,
        heartbeat_at=stale,
        attempts=1,
    )
    assert jobs.run(job.pk) == Job.SUCCEEDED
    job.refresh_from_db()
    assert job.attempts == 2
    # A job still beating is left alone: no two workers run it at once.
    live = Job.objects.create(
        kind="test.count",
        title="t",
        customer_path=cast.ministry.path,
        status=Job.RUNNING,
        heartbeat_at=timezone.now(),
    )
    assert jobs.run(live.pk) == "skipped"
