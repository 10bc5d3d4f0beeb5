"""The embedded task runner: runs jobs and the periodic schedule without Celery or a broker.

``make run`` starts it as its own process (``manage.py run_tasks``), beside gunicorn, so a
job never runs inside the HTTP request that enqueued it. ``ums.jobs._dispatch`` sends a
PostgreSQL ``NOTIFY`` after commit; the runner ``LISTEN``s on a dedicated connection and
wakes at once, claims pending Job rows through :func:`ums.jobs.run` (a conditional UPDATE,
so a job never runs twice even next to a Celery worker) on a small thread pool, and also
polls every few seconds in case a notification was lost (runner restarting, dispatch that
failed). The entries of ``CELERY_BEAT_SCHEDULE`` are called directly at their intervals on
a second pool, each entry never overlapping itself.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection, connections

logger = logging.getLogger(__name__)

CHANNEL = "ums_jobs"


def notify(job_id: int) -> None:
    """Wake the runner for ``job_id`` (after commit; the poll covers a failure here)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(job_id)])
    except Exception:
        # The job row is committed and pending: the runner's poll will find it. Failing the
        # user's request here would only make them retry a change that was saved.
        logger.exception("could not notify the task runner of job %s", job_id)


def _conninfo() -> dict[str, Any]:
    db = settings.DATABASES["default"]
    params = {
        "dbname": db["NAME"],
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
    }
    params.update(db.get("OPTIONS") or {})
    return {k: v for k, v in params.items() if v is not None}


def _job_ids(notes: list[Any]) -> set[int]:
    return {int(n.payload) for n in notes if n.payload.isdigit() and len(n.payload) < 19}


class Periodic:
    """One entry of the beat schedule: a callable and how often it runs."""

    def __init__(self, name: str, func: Callable[..., Any], every: float, args: Any, kwargs: Any):
        self.name = name
        self.func = func
        self.every = every
        self.args = tuple(args or ())
        self.kwargs = dict(kwargs or {})
        self.due = time.monotonic() + every
        self.running = False


def load_schedule() -> list[Periodic]:
    """The beat schedule's entries with their task functions (interval schedules only)."""
    from ums.celery import app

    app.loader.import_default_modules()
    entries = []
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        every = entry["schedule"]
        if isinstance(every, datetime.timedelta):
            every = every.total_seconds()
        if not isinstance(every, int | float):
            every = every.run_every.total_seconds()  # celery.schedules.schedule
        task = app.tasks[entry["task"]]
        entries.append(Periodic(name, task, float(every), entry.get("args"), entry.get("kwargs")))
    return entries


class TaskRunner:
    """Claims and runs pending jobs when notified or polled; runs the periodic schedule."""

    def __init__(
        self,
        *,
        workers: int = 4,
        poll_seconds: float = 5.0,
        schedule: list[Periodic] | None = None,
    ) -> None:
        self.workers = workers
        self.poll_seconds = poll_seconds
        self.schedule = schedule if schedule is not None else []
        self.stop_event = threading.Event()
        self._inflight: set[int] = set()
        self._lock = threading.Lock()
        self._rescan = threading.Event()
        self._jobs = ThreadPoolExecutor(workers, thread_name_prefix="job")
        self._periodic = ThreadPoolExecutor(2, thread_name_prefix="periodic")

    def stop(self) -> None:
        self.stop_event.set()

    def run_forever(self) -> None:
        from ums import jobs

        jobs.load_handlers()
        listener = psycopg.connect(**_conninfo(), autocommit=True)
        try:
            listener.execute(f"LISTEN {CHANNEL}")
            logger.info("task runner listening (%d workers)", self.workers)
            next_poll = 0.0
            named: set[int] = set()
            while not self.stop_event.is_set():
                now = time.monotonic()
                if now >= next_poll or self._rescan.is_set() or named:
                    self._rescan.clear()
                    self._claim_pending(named)
                    named = set()
                    next_poll = now + self.poll_seconds
                self._run_due(now)
                # Wake on a notification, a finished job (rescan), the next poll, or at
                # least every second to notice a stop request.
                wakes = [next_poll, *(e.due for e in self.schedule if not e.running)]
                wait = max(0.0, min(1.0, min(wakes) - time.monotonic()))
                notes = list(listener.notifies(timeout=wait, stop_after=1))
                if notes:  # and whatever else is queued: one scan serves them all
                    notes += list(listener.notifies(timeout=0))
                    named |= _job_ids(notes)
        finally:
            listener.close()
            self._jobs.shutdown(wait=True)
            self._periodic.shutdown(wait=True)
            connections.close_all()

    def _claim_pending(self, named: set[int]) -> None:
        """Start pending jobs, oldest first, and the jobs named by notifications.

        A named job may be a running one whose worker died (re-dispatched by the
        reconciler): ``jobs.run`` claims it only if its heartbeat is stale.
        """
        from ums.models import Job

        with self._lock:
            free = self.workers - len(self._inflight)
            if free <= 0:
                return  # a finished job triggers the next scan; the reconciler re-names
            ids = [i for i in sorted(named) if i not in self._inflight][:free]
            ids += list(
                Job.objects.filter(status=Job.PENDING)
                .exclude(pk__in=[*self._inflight, *ids])
                .order_by("pk")
                .values_list("pk", flat=True)[: free - len(ids)]
            )
            self._inflight.update(ids)
        for job_id in ids:
            self._jobs.submit(self._run_job, job_id)

    def _run_job(self, job_id: int) -> None:
        from ums import jobs

        try:
            jobs.run(job_id)
        except Exception:
            logger.exception("job %s could not be run", job_id)
        finally:
            connections.close_all()
            with self._lock:
                self._inflight.discard(job_id)
            self._rescan.set()  # a free slot: take the next pending job now

    def _run_due(self, now: float) -> None:
        for entry in self.schedule:
            if entry.running or now < entry.due:
                continue
            entry.running = True
            entry.due = now + entry.every
            self._periodic.submit(self._run_periodic, entry)

    def _run_periodic(self, entry: Periodic) -> None:
        try:
            entry.func(*entry.args, **entry.kwargs)
        except Exception:
            logger.exception("periodic task %s failed", entry.name)
        finally:
            connections.close_all()
            entry.running = False


def run_until_signalled(runner: TaskRunner) -> None:
    """Run until SIGTERM or SIGINT, then finish the jobs in hand and return."""
    import signal

    def handle(signum: int, frame: Any) -> None:
        runner.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
    with contextlib.suppress(KeyboardInterrupt):
        runner.run_forever()
