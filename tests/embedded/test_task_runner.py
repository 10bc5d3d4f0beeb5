"""The embedded task runner: without a broker a request never runs its job; the runner
process (``manage.py run_tasks``) does, woken by NOTIFY, and runs the periodic schedule."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from mail.models import Mailbox
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain
from ums.embedded.runner import Periodic, TaskRunner
from ums.models import Job

ROOT = Path(__file__).resolve().parents[2]

CSV = (
    "type,address,display_name,password,quota_mb,targets,enabled\n"
    "mailbox,{name}@ministry.example,Anna,Birch-Canyon-Delta-31,500,,true\n"
)


@contextmanager
def runner_process(*, poll: float) -> Iterator[subprocess.Popen]:
    """``manage.py run_tasks`` on the test database, as ``make run`` starts it."""
    db = connection.settings_dict
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"CELERY_BROKER_URL", "UMS_TASKS_IN_PROCESS", "DATABASE_URL"}
    }
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_tasks", "--poll", str(poll), "--no-schedule"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Ready when it says it listens (logged after LISTEN).
        assert proc.stderr is not None
        for line in proc.stderr:
            if "task runner listening" in line:
                break
        else:
            pytest.fail(f"run_tasks exited ({proc.wait()}) before listening")
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def wait_finished(job: Job, timeout: float = 60) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_finished:
            return job
        time.sleep(0.1)
    return job


def import_csv(client, name: str) -> Job:
    response = client.post(
        reverse("mail-import-list"), {"csv": CSV.format(name=name), "dryRun": False}, format="json"
    )
    assert response.status_code == 201, response.content
    return Job.objects.get(pk=response.json()["job"])


@pytest.mark.django_db(transaction=True)
def test_a_request_returns_before_its_job_runs_and_the_runner_then_runs_it(
    cast: Cast, settings
) -> None:
    settings.UMS_TASK_MODE = "embedded"  # no broker, not the suite's eager mode
    make_domain(cast.ministry, "ministry.example")
    client = token_client(cast.sub_admin)

    job = import_csv(client, "anna")
    # The response is back and the job has not run: nothing ran inside the request.
    job.refresh_from_db()
    assert job.status == Job.PENDING
    assert not Mailbox.objects.filter(email="anna@ministry.example").exists()

    # A poll far longer than the test: only the start-up scan and NOTIFY can wake it.
    with runner_process(poll=600):
        assert wait_finished(job).status == Job.SUCCEEDED, job.error
        assert Mailbox.objects.filter(email="anna@ministry.example").exists()
        # The import queued the activation of its plain password; the runner runs it too.
        activation = Job.objects.get(pk=job.result["activation_job"])
        assert wait_finished(activation, timeout=30).status == Job.SUCCEEDED, activation.error
        assert not Mailbox.objects.get(email="anna@ministry.example").password_pending
        second = import_csv(client, "ben")
        assert wait_finished(second, timeout=30).status == Job.SUCCEEDED, second.error
    assert Mailbox.objects.filter(email="ben@ministry.example").exists()


@pytest.mark.django_db(transaction=True)
def test_periodic_entries_run_at_their_interval_and_never_overlap() -> None:
    calls: list[float] = []
    running = threading.Event()
    overlaps: list[bool] = []

    def slow_task() -> None:
        overlaps.append(running.is_set())
        running.set()
        calls.append(time.monotonic())
        time.sleep(0.3)
        running.clear()

    runner = TaskRunner(
        workers=1, poll_seconds=600, schedule=[Periodic("slow", slow_task, 0.1, None, None)]
    )
    thread = threading.Thread(target=runner.run_forever)
    thread.start()
    time.sleep(2.5)
    runner.stop()
    thread.join(timeout=30)
    assert len(calls) >= 2
    assert not any(overlaps)


@pytest.mark.django_db(transaction=True)
def test_a_notified_job_abandoned_by_a_dead_runner_is_taken_up(cast: Cast) -> None:
    """The reconciler re-dispatches a running job whose heartbeat stopped; the runner must
    take it although it is not pending (``jobs.run`` decides whether it is stale)."""
    import datetime

    from django.utils import timezone

    from tests.jobs import handlers  # noqa: F401  (registers test.count)
    from ums import jobs
    from ums.embedded.runner import notify

    stale = timezone.now() - jobs.stale_after() - datetime.timedelta(seconds=1)
    job = Job.objects.create(
        kind="test.count",
        title="abandoned",
        customer_path=cast.ministry.path,
        status=Job.RUNNING,
        started_at=stale,
        heartbeat_at=stale,
        params={"n": 1},
    )
    runner = TaskRunner(workers=1, poll_seconds=600)
    thread = threading.Thread(target=runner.run_forever)
    thread.start()
    try:
        time.sleep(1.5)  # listening, start-up scan done (it finds nothing pending)
        job.refresh_from_db()
        assert job.status == Job.RUNNING
        notify(job.pk)
        assert wait_finished(job, timeout=30).status == Job.SUCCEEDED, job.error
    finally:
        runner.stop()
        thread.join(timeout=30)
