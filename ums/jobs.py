"""Starting and running jobs.

``enqueue`` creates the Job row inside the caller's transaction and hands it to Celery only
after commit, with the requesting administrator and request id, so the work (and the audit
records it writes) stays attributed. ``run`` claims the row with a conditional UPDATE, so a
redelivered task (acks late, worker lost) never runs a job twice at once, then calls the
handler registered for the job's kind with a :class:`Reporter` for progress and log lines.
"""

from __future__ import annotations

import datetime
import logging
import traceback
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from ums import context
from ums.models import Job

logger = logging.getLogger(__name__)

Handler = Callable[[Job, "Reporter"], dict | None]
_HANDLERS: dict[str, Handler] = {}

# A running job whose heartbeat is older than this is considered abandoned (worker died).
STALE_AFTER = datetime.timedelta(minutes=10)
MAX_LOG_CHARS = 200_000


class PermanentJobError(Exception):
    """The job cannot succeed by retrying; fail it with this message."""


def handler(kind: str) -> Callable[[Handler], Handler]:
    """Register the function that performs jobs of ``kind``."""

    def register(func: Handler) -> Handler:
        _HANDLERS[kind] = func
        return func

    return register


def enqueue(
    kind: str,
    *,
    actor: Any,
    title: str,
    customer: Any = None,
    customer_path: str | None = None,
    params: dict | None = None,
    target: models.Model | None = None,
    total: int = 0,
) -> Job:
    ctx = context.current()
    actor = actor if actor is not None else ctx.actor
    path = customer_path or (customer.path if customer is not None else None)
    if path is None and actor is not None:
        path = actor.customer_path
    job = Job.objects.create(
        kind=kind,
        title=title[:200],
        customer_id=getattr(customer, "pk", None),
        customer_path=path or "/",
        requested_by_id=getattr(actor, "pk", None),
        requested_by_name=getattr(actor, "audit_name", "") if actor is not None else "system",
        request_id=ctx.request_id,
        object_type=target._meta.label_lower if target is not None else "",
        object_id=str(target.pk) if target is not None else "",
        params=params or {},
        progress_total=total,
    )
    transaction.on_commit(lambda: _dispatch(job.pk))
    return job


def _dispatch(job_id: int) -> None:
    """Hand a committed job to whatever runs jobs in this install (settings.UMS_TASK_MODE).

    Embedded: a NOTIFY wakes the embedded task runner, a separate process, so the request
    returns at once; a lost notification is caught by the runner's poll. Celery: the task
    goes to the broker. Eager (tests): Celery's eager mode runs it here and now.
    """
    from django.conf import settings

    if settings.UMS_TASK_MODE == "embedded":
        from ums.embedded.runner import notify

        notify(job_id)
        return
    from ums.tasks import run_job

    run_job.delay(job_id)


class Reporter:
    """What a handler uses to tell the world how far it got."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def log(self, line: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        Job.objects.filter(pk=self.job.pk).update(
            log=Concat(F("log"), Value(f"[{stamp}] {line}\n"), output_field=models.TextField()),
            heartbeat_at=timezone.now(),
        )

    def progress(self, done: int, total: int | None = None) -> None:
        fields: dict[str, Any] = {"progress_done": done, "heartbeat_at": timezone.now()}
        if total is not None:
            fields["progress_total"] = total
        Job.objects.filter(pk=self.job.pk).update(**fields)
        self.job.progress_done = done
        if total is not None:
            self.job.progress_total = total


def _claim(job_id: int) -> bool:
    now = timezone.now()
    fresh = models.Q(status=Job.PENDING)
    abandoned = models.Q(status=Job.RUNNING, heartbeat_at__lt=now - STALE_AFTER)
    return bool(
        Job.objects.filter(fresh | abandoned, pk=job_id).update(
            status=Job.RUNNING,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
        )
    )


def _actor_for(job: Job) -> Any:
    if job.requested_by_id is None:
        return None
    return get_user_model().objects.filter(pk=job.requested_by_id).first()


def run(job_id: int) -> str:
    """Run one job to completion; returns its final status (or 'skipped')."""
    if not _claim(job_id):
        return "skipped"
    job = Job.objects.get(pk=job_id)
    func = _HANDLERS.get(job.kind)
    reporter = Reporter(job)
    with context.acting(
        channel=context.CHANNEL_TASK, actor=_actor_for(job), request_id=job.request_id or None
    ):
        if func is None:
            return _finish(job, Job.FAILED, error=f"no handler for job kind {job.kind!r}")
        try:
            result = func(job, reporter) or {}
        except PermanentJobError as exc:
            reporter.log(f"failed: {exc}")
            return _finish(job, Job.FAILED, error=str(exc))
        except Exception as exc:
            logger.exception("job %s (%s) failed", job.pk, job.kind)
            reporter.log(f"failed: {exc}")
            return _finish(job, Job.FAILED, error=f"{exc}\n\n{traceback.format_exc()}")
    return _finish(job, Job.SUCCEEDED, result=result)


def _finish(job: Job, status: str, *, result: dict | None = None, error: str = "") -> str:
    updates: dict[str, Any] = {"status": status, "finished_at": timezone.now(), "error": error}
    if result is not None:
        updates["result"] = result
    if status == Job.SUCCEEDED:
        updates["progress_done"] = F("progress_total")
    Job.objects.filter(pk=job.pk).update(**updates)
    return status


def load_handlers() -> None:
    """Import every app's ``jobs`` module so its handlers are registered."""
    from importlib import import_module

    for config in apps.get_app_configs():
        try:
            import_module(f"{config.name}.jobs")
        except ModuleNotFoundError as exc:
            if exc.name != f"{config.name}.jobs":
                raise
