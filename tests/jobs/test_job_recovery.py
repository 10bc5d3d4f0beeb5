"""Jobs survive dead workers: heartbeat, resume on redelivery, reconciler, fencing, give up.

In-process here (the reconciler and ``jobs.run`` called directly); tests/faults kill real
workers.
"""

from __future__ import annotations

import datetime
import socket
import subprocess
import time

import pytest
from django.utils import timezone

from audit.models import AuditRecord
from tests.fixtures import Cast
from tests.jobs import handlers  # noqa: F401  (registers the test job kinds)
from ums import jobs
from ums import reconcile as reconcile_loop
from ums.job_reconcile import redrive_jobs
from ums.joblog import translate_log
from ums.models import Job

pytestmark = pytest.mark.django_db


def dead_owner() -> str:
    """``host:pid`` of a process of this host that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}"


def running_job(cast: Cast, kind: str = "test.count", **fields) -> Job:
    now = timezone.now()
    values = {"status": Job.RUNNING, "started_at": now, "heartbeat_at": now, "attempts": 1}
    values.update(fields)
    return Job.objects.create(kind=kind, title="t", customer_path=cast.ministry.path, **values)


def stale() -> datetime.datetime:
    return timezone.now() - jobs.stale_after() - datetime.timedelta(seconds=1)


def test_a_redelivered_task_resumes_at_once_when_the_previous_process_is_gone(
    cast: Cast,
) -> None:
    job = running_job(cast, owner=dead_owner())
    assert jobs.run(job.pk) == Job.SUCCEEDED
    job.refresh_from_db()
    assert job.attempts == 2 and job.owner == ""


def test_a_run_whose_process_lives_is_left_alone(cast: Cast) -> None:
    job = running_job(cast, owner=f"{socket.gethostname()}:1")  # init never dies
    assert jobs.run(job.pk) == "skipped"
    job.refresh_from_db()
    assert job.status == Job.RUNNING and job.attempts == 1


def test_the_reconciler_runs_a_job_whose_worker_stopped_beating(cast: Cast) -> None:
    job = running_job(cast, heartbeat_at=stale(), owner="elsewhere:123")
    assert redrive_jobs() == {"requeued": 1, "dispatched": 1}
    job.refresh_from_db()
    # In-process tasks: the dispatch ran it.
    assert job.status == Job.SUCCEEDED and job.attempts == 2
    assert "the worker running attempt 1 stopped" in translate_log(job.log, "en")


def test_a_lost_dispatch_is_sent_again_and_not_before_it_is_due(cast: Cast) -> None:
    later = timezone.now() + datetime.timedelta(seconds=60)
    waiting = Job.objects.create(
        kind="test.count", title="w", customer_path="/", next_attempt_at=later
    )
    lost = Job.objects.create(
        kind="test.count", title="l", customer_path="/", next_attempt_at=timezone.now()
    )
    assert redrive_jobs() == {"dispatched": 1}
    lost.refresh_from_db()
    waiting.refresh_from_db()
    assert lost.status == Job.SUCCEEDED
    assert waiting.status == Job.PENDING


def test_retries_back_off_and_then_the_job_fails_with_a_reason_and_an_audit_record(
    cast: Cast, settings
) -> None:
    settings.UMS_JOB_MAX_ATTEMPTS = 3
    assert jobs.retry_delay(1) == datetime.timedelta(0)
    assert jobs.retry_delay(2) == datetime.timedelta(seconds=5)
    assert jobs.retry_delay(3) == datetime.timedelta(seconds=10)
    assert jobs.retry_delay(30) == datetime.timedelta(minutes=5)
    job = running_job(cast, kind="test.sleep", heartbeat_at=stale(), attempts=2)
    assert redrive_jobs() == {"requeued": 1}
    job.refresh_from_db()
    assert job.status == Job.PENDING
    assert job.next_attempt_at > timezone.now() + datetime.timedelta(seconds=3)

    Job.objects.filter(pk=job.pk).update(status=Job.RUNNING, attempts=3, heartbeat_at=stale())
    assert redrive_jobs() == {"given_up": 1}
    job.refresh_from_db()
    assert job.status == Job.FAILED
    assert "stopped 3 times before it finished" in job.error
    assert "Traceback" not in job.error
    record = AuditRecord.objects.get(action="job.given_up")
    assert record.object_id == str(job.pk)


def test_a_kind_that_may_not_run_twice_fails_instead_of_running_again(cast: Cast) -> None:
    job = running_job(cast, kind="test.once", owner=dead_owner())
    assert jobs.run(job.pk) == "skipped"
    job.refresh_from_db()
    assert job.status == Job.FAILED
    assert "not repeated automatically" in job.error


def test_a_superseded_run_cannot_overwrite_the_outcome(cast: Cast) -> None:
    job = running_job(cast, attempts=2)
    assert jobs._finish(job, 1, Job.FAILED, error="late") == "superseded"
    job.refresh_from_db()
    assert job.status == Job.RUNNING and job.error == ""


def test_the_error_is_a_sentence_and_the_traceback_goes_to_the_log(cast: Cast, caplog) -> None:
    job = Job.objects.create(kind="test.crash", title="c", customer_path="/")
    assert jobs.run(job.pk) == Job.FAILED
    job.refresh_from_db()
    assert job.error == "the disk is full"
    assert "Traceback" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_beats_while_the_handler_works(cast: Cast, settings, monkeypatch) -> None:
    settings.UMS_JOB_STALE_SECONDS = 3  # a beat every 0.6 s
    job = Job.objects.create(kind="test.sleep", title="s", customer_path="/", params={"seconds": 2})
    renewals: list[int] = []
    original = jobs.Reporter.__init__

    def with_renewal(self, job, heartbeat=None):
        original(self, job, heartbeat)
        self.on_heartbeat(lambda: renewals.append(1))  # what a converge's lease does

    monkeypatch.setattr(jobs.Reporter, "__init__", with_renewal)
    started = time.monotonic()
    assert jobs.run(job.pk) == Job.SUCCEEDED
    assert time.monotonic() - started >= 2
    job.refresh_from_db()
    assert len(renewals) >= 2
    assert job.heartbeat_at > job.started_at + datetime.timedelta(seconds=1)


def test_a_reconciler_pass_with_nothing_pending_is_a_few_queries(
    cast: Cast, django_assert_max_num_queries
) -> None:
    for _ in range(20):
        Job.objects.create(kind="test.count", title="done", customer_path="/", status="succeeded")
    from django.core.cache import cache

    from ums import outbox

    reconcile_loop.load()
    cache.set(outbox._purge_key(), 1)  # the hourly purge is not part of a quiet pass
    # One indexed query per reconciler (jobs, outbox, converge intents, held-mail
    # requests) plus held mail's purge of day-old idempotency keys, and team chat's two
    # (the periodic resync's conditional UPDATE, then the realms still behind), and the
    # office wiring's two (the office and cloud files nodes, the last fingerprint), the
    # nodes whose storage is not as requested, and the audit chain's unchained records,
    # and imported passwords waiting for their hash.
    with django_assert_max_num_queries(12):
        report = reconcile_loop.run_all()
    did = {name: {k: v for k, v in r.items() if k != "ms" and v} for name, r in report.items()}
    assert not any(did.values()), report
