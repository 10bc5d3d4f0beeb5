"""Starting and running jobs, and keeping them alive across dead workers.

``enqueue`` creates the Job row inside the caller's transaction and hands it to Celery only
after commit, with the requesting administrator and request id, so the work (and the audit
records it writes) stays attributed. ``run`` claims the row with a conditional UPDATE, so a
redelivered task never runs a job twice at once, then calls the handler registered for the
job's kind with a :class:`Reporter` for progress and log lines.

Crash safety (issue 12):

* while a handler runs, a heartbeat thread stamps ``heartbeat_at`` every few seconds
  (and calls what the handler asked to be renewed with it, e.g. a node's converge lease);
* each claim increments ``attempts``, which is the run's fencing token: the heartbeat and
  the final status are written ``WHERE attempts = mine``, so a run that was given up for
  dead and taken over cannot overwrite its successor's outcome;
* a redelivered task (the pool process died, acks_late) whose previous run's process is
  provably gone (same host, pid no longer alive) resumes at once instead of "skipped";
* the ``jobs`` reconciler (:mod:`ums.job_reconcile`) dispatches again pending jobs nobody
  claimed (lost message) and running jobs whose heartbeat stopped, with backoff, up to
  ``UMS_JOB_MAX_ATTEMPTS`` runs; then the job fails with a human reason and
  :data:`job_gave_up` is sent (deploy raises a node alert for node jobs).

``Job.error`` holds a sentence for administrators; tracebacks go to the log only.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, models, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.dispatch import Signal
from django.utils import timezone
from django.utils.translation import gettext_noop

from ums import context
from ums.joblog import log_entry
from ums.models import Job

logger = logging.getLogger(__name__)

Handler = Callable[[Job, "Reporter"], dict | None]
_HANDLERS: dict[str, Handler] = {}
#: Job kinds that must not run a second time after their worker died mid-way.
_NOT_RETRIABLE: set[str] = set()
MAX_LOG_CHARS = 200_000
#: The longest a reconciler waits before dispatching a never-claimed job once more.
MAX_REDISPATCH_DELAY = datetime.timedelta(minutes=5)

#: Sent when a job is given up for good (``job``: the Job, ``reason``: the sentence).
job_gave_up = Signal()


def stale_after() -> datetime.timedelta:
    """A running job whose heartbeat is older than this lost its worker."""
    return datetime.timedelta(seconds=settings.UMS_JOB_STALE_SECONDS)


def heartbeat_interval() -> float:
    """Five beats per stale period: one slow database write never looks like a death."""
    return max(0.5, settings.UMS_JOB_STALE_SECONDS / 5)


def max_attempts() -> int:
    return settings.UMS_JOB_MAX_ATTEMPTS


def retry_delay(attempts: int) -> datetime.timedelta:
    """Pause before run ``attempts + 1`` after a dead worker: at once the first time (the
    worker died, not the work), then 5 s, 10 s, 20 s... up to 5 minutes."""
    if attempts <= 1:
        return datetime.timedelta(0)
    return min(datetime.timedelta(seconds=5 * 2 ** (attempts - 2)), MAX_REDISPATCH_DELAY)


class PermanentJobError(Exception):
    """The job cannot succeed by retrying; fail it with this message."""


def handler(kind: str, *, retriable: bool = True) -> Callable[[Handler], Handler]:
    """Register the function that performs jobs of ``kind``.

    Handlers must be safe to run again after a worker died mid-way (read the node before
    acting, claim rows conditionally). A kind that cannot be (a reboot: running it twice
    reboots twice) passes ``retriable=False``: its job then fails with a reason instead.
    """

    def register(func: Handler) -> Handler:
        _HANDLERS[kind] = func
        if not retriable:
            _NOT_RETRIABLE.add(kind)
        else:
            _NOT_RETRIABLE.discard(kind)
        return func

    return register


def is_retriable(kind: str) -> bool:
    return kind not in _NOT_RETRIABLE


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
        # Not claimed by then (the message was lost): the reconciler dispatches it again.
        next_attempt_at=timezone.now() + stale_after(),
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

    def __init__(self, job: Job, heartbeat: _Heartbeat | None = None) -> None:
        self.job = job
        self._heartbeat = heartbeat

    def say(self, msgid: str, /, **params: Any) -> None:
        """Log a line each reader sees in their language (see :mod:`ums.joblog`).

        ``msgid`` is English with ``%(name)s`` placeholders, passed as
        ``gettext_noop("...")`` so makemessages collects it; ``params`` fill the
        placeholders as given (node output stays untranslated). Handlers use this, never
        ``log`` with a formatted string.
        """
        self.log(log_entry(msgid, **params))

    def log(self, line: str) -> None:
        """Append ``line`` as stored (for lines already built by :func:`log_entry`)."""
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

    def on_heartbeat(self, callback: Callable[[], Any]) -> None:
        """Call ``callback`` with every heartbeat (in the heartbeat thread, with its own
        database connection) while the handler runs: lease renewals belong here."""
        if self._heartbeat is not None:
            self._heartbeat.callbacks.append(callback)


class _Heartbeat(threading.Thread):
    """Stamps the job's heartbeat while its handler runs, whatever the handler is doing
    (a node command that takes minutes included), fenced by the run's token."""

    def __init__(self, job_id: int, token: int) -> None:
        super().__init__(name=f"job-{job_id}-heartbeat", daemon=True)
        self.job_id = job_id
        self.token = token
        self.callbacks: list[Callable[[], Any]] = []
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopped.wait(heartbeat_interval()):
                self.beat()
        finally:
            connection.close()

    def beat(self) -> None:
        try:
            alive = Job.objects.filter(
                pk=self.job_id, status=Job.RUNNING, attempts=self.token
            ).update(heartbeat_at=timezone.now())
        except Exception:
            logger.exception("heartbeat of job %s failed", self.job_id)
            return
        if not alive:
            return  # taken over or finished: nothing of ours to keep alive
        for callback in list(self.callbacks):
            try:
                callback()
            except Exception:
                logger.exception("heartbeat callback of job %s failed", self.job_id)

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join(timeout=30)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_gone(owner: str) -> bool:
    """True only when ``owner`` (``host:pid``) is a process of this host that has ended."""
    host, _sep, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _claim(job_id: int) -> int | None:
    """Take the job for this process; its fencing token (attempt number), or None.

    A pending job is taken; so is a running one whose previous run is dead (heartbeat
    expired, or its process on this host is gone), unless that run was the last allowed
    or the kind may not run twice: then the job fails with the reason.
    """
    now = timezone.now()
    row = Job.objects.filter(pk=job_id).values("status", "kind", "owner", "attempts").first()
    if row is None:
        return None
    claimable = models.Q(status=Job.PENDING)
    if row["status"] == Job.RUNNING:
        dead = models.Q(heartbeat_at__lt=now - stale_after())
        if row["owner"] and owner_is_gone(row["owner"]):
            dead |= models.Q(owner=row["owner"])
        abandoned = Job.objects.filter(dead, pk=job_id, status=Job.RUNNING)
        if abandoned.filter(attempts=row["attempts"]).exists():
            reason = give_up_reason(row["kind"], row["attempts"])
            if reason:
                fail_abandoned(job_id, row["attempts"], reason)
                return None
        claimable |= models.Q(dead, status=Job.RUNNING)
    me = _owner()
    claimed = Job.objects.filter(claimable, pk=job_id).update(
        status=Job.RUNNING,
        started_at=now,
        heartbeat_at=now,
        owner=me,
        attempts=F("attempts") + 1,
        next_attempt_at=None,
    )
    if not claimed:
        return None
    if row["status"] == Job.RUNNING:
        logger.warning("job %s: previous run (%s) is dead; resuming", job_id, row["owner"])
    token = Job.objects.filter(pk=job_id, owner=me).values_list("attempts", flat=True).first()
    return token


def give_up_reason(kind: str, attempts: int) -> str:
    """Why a job whose run ``attempts`` died must not run again, or "" if it may."""
    if not is_retriable(kind):
        return (
            "The worker running this job stopped before it finished. This kind of job is "
            "not repeated automatically (it could act twice): check the node, then start "
            "it again if needed."
        )
    if attempts >= max_attempts():
        return (
            f"The worker running this job stopped {attempts} times before it finished; "
            "it was given up. Check the workers' logs and the node, then start it again."
        )
    return ""


def fail_abandoned(job_id: int, attempts: int, reason: str) -> bool:
    """Fail a job whose run ``attempts`` was abandoned; audited, and :data:`job_gave_up`
    is sent. False if someone else changed the job first."""
    from ums import auditing

    with transaction.atomic():
        done = Job.objects.filter(
            pk=job_id, status__in=(Job.RUNNING, Job.PENDING), attempts=attempts
        ).update(status=Job.FAILED, finished_at=timezone.now(), error=reason, owner="")
        if not done:
            return False
        job = Job.objects.get(pk=job_id)
        _append_log(job_id, log_entry(gettext_noop("given up: %(reason)s"), reason=reason))
        auditing.record(
            "job.given_up",
            obj=job,
            customer_path=job.customer_path,
            actor=None,
            extra={"kind": job.kind, "attempts": attempts, "reason": reason},
        )
    logger.error("job %s (%s) given up: %s", job_id, job.kind, reason)
    job_gave_up.send(sender=Job, job=job, reason=reason)
    return True


def _append_log(job_id: int, line: str) -> None:
    stamp = timezone.now().strftime("%H:%M:%S")
    Job.objects.filter(pk=job_id).update(
        log=Concat(F("log"), Value(f"[{stamp}] {line}\n"), output_field=models.TextField())
    )


def requeue_abandoned(job_id: int, attempts: int) -> bool:
    """Put a job whose run ``attempts`` died back to pending, due after the backoff."""
    delay = retry_delay(attempts)
    moved = Job.objects.filter(pk=job_id, status=Job.RUNNING, attempts=attempts).update(
        status=Job.PENDING, owner="", next_attempt_at=timezone.now() + delay
    )
    if moved:
        _append_log(
            job_id,
            log_entry(
                gettext_noop(
                    "the worker running attempt %(attempt)d stopped; "
                    "running it again in %(seconds)d s"
                ),
                attempt=attempts,
                seconds=int(delay.total_seconds()),
            ),
        )
    return bool(moved)


def _actor_for(job: Job) -> Any:
    if job.requested_by_id is None:
        return None
    return get_user_model().objects.filter(pk=job.requested_by_id).first()


def human_error(exc: BaseException) -> str:
    """A sentence for the job's error field: the exception's own message, never a
    traceback (that goes to the log)."""
    text = str(exc).strip()
    if not text:
        return f"Unexpected error ({type(exc).__name__}); see the worker's log."
    return text[:4000]


def run(job_id: int) -> str:
    """Run one job to completion; returns its final status (or 'skipped')."""
    token = _claim(job_id)
    if token is None:
        return "skipped"
    job = Job.objects.get(pk=job_id)
    func = _HANDLERS.get(job.kind)
    heartbeat = _Heartbeat(job.pk, token)
    reporter = Reporter(job, heartbeat)
    heartbeat.start()
    try:
        with context.acting(
            channel=context.CHANNEL_TASK, actor=_actor_for(job), request_id=job.request_id or None
        ):
            if func is None:
                return _finish(
                    job, token, Job.FAILED, error=f"no handler for job kind {job.kind!r}"
                )
            try:
                result = func(job, reporter) or {}
            except PermanentJobError as exc:
                reporter.say(gettext_noop("failed: %(error)s"), error=str(exc))
                return _finish(job, token, Job.FAILED, error=str(exc))
            except Exception as exc:
                logger.exception("job %s (%s) failed", job.pk, job.kind)
                reporter.say(gettext_noop("failed: %(error)s"), error=human_error(exc))
                return _finish(job, token, Job.FAILED, error=human_error(exc))
        return _finish(job, token, Job.SUCCEEDED, result=result)
    finally:
        heartbeat.stop()


def _finish(
    job: Job, token: int, status: str, *, result: dict | None = None, error: str = ""
) -> str:
    updates: dict[str, Any] = {
        "status": status,
        "finished_at": timezone.now(),
        "error": error,
        "owner": "",
    }
    if result is not None:
        updates["result"] = result
    if status == Job.SUCCEEDED:
        updates["progress_done"] = F("progress_total")
    # Fenced: a run that was taken for dead and superseded must not overwrite the outcome.
    if not Job.objects.filter(pk=job.pk, attempts=token, status=Job.RUNNING).update(**updates):
        logger.warning("job %s: run %s finished after being superseded", job.pk, token)
        return "superseded"
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
