"""Applying a held-mail request (:class:`~spamhold.models.OutcomeIntent`) on its nodes.

The request was written in the administrator's transaction (``spamhold.actions``); this
module is the job's side and the reconciler's tools. A job first takes the request's
*lease* (a conditional UPDATE: only one job applies a request at a time, and a job whose
worker died loses it after ``UMS_SPAMHOLD_INTENT_LEASE`` seconds), then, for "everything
matching a filter", claims the matches, and then works through the pending messages node
by node in batches of :data:`CHUNK`:

read the hold queue -> act on what is still held (marker first) -> read again -> settle.

Each batch is settled in its own transaction before the next one starts; the lease is
renewed by a :class:`LeaseKeeper` thread while the job lives (a slow node is not a dead
worker), so a dead worker loses at most one batch of bookkeeping, never mail: the
next attempt reads the node and the marker file and settles what the dead one did.
Node failures leave the messages pending with the reason on each row; the request is
retried with backoff and given up after ``UMS_SPAMHOLD_INTENT_MAX_ATTEMPTS`` attempts
(messages back on hold, the reason kept on the rows, the request failed with it, an audit
record and an error in the log).
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from deploy.connector.base import ConnectorError
from deploy.nodes import describe_error, session
from servers.models import Node
from ums import jobs

from . import nodeops
from .models import PENDING_STATES, HeldMessage, IntentState, Outcome, OutcomeIntent, Status

logger = logging.getLogger(__name__)

#: Messages per node command and per settling transaction.
CHUNK = 500
#: Retry backoff: BACKOFF_BASE * 2**(attempt-1) seconds, at most BACKOFF_MAX.
BACKOFF_BASE = 5
BACKOFF_MAX = 300
#: Failed ids listed in a request's result.
MAX_LISTED = 200

#: What a message's status becomes once its node confirms the requested outcome.
TARGET_STATUS = {
    Outcome.RELEASE: Status.RELEASED,
    Outcome.RELEASE_ALLOW: Status.RELEASED,
    Outcome.DELETE: Status.DELETED,
    Outcome.DELETE_BLOCK: Status.DELETED,
    Outcome.EXPIRE: Status.EXPIRED,
}
NODE_OPERATION = {
    Outcome.RELEASE: "release",
    Outcome.RELEASE_ALLOW: "release",
    Outcome.DELETE: "delete",
    Outcome.DELETE_BLOCK: "delete",
    Outcome.EXPIRE: "delete",
}


class LeaseLost(Exception):
    """Another job took the request over (this one was thought dead): stop quietly."""


def lease_seconds() -> int:
    return int(getattr(settings, "UMS_SPAMHOLD_INTENT_LEASE", 20))


def max_attempts() -> int:
    return int(getattr(settings, "UMS_SPAMHOLD_INTENT_MAX_ATTEMPTS", 8))


def backoff(attempts: int) -> datetime.timedelta:
    seconds = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, attempts - 1))
    return datetime.timedelta(seconds=max(seconds, lease_seconds()))


def pending_rows(intent: OutcomeIntent) -> Any:
    """The request's messages the node has not confirmed yet."""
    return HeldMessage.objects.filter(intent=intent, status=Status.ONHOLD).exclude(outcome="")


# ---------------------------------------------------------------------- lease


def take_lease(intent_id: int, job_id: int) -> bool:
    """Start applying the request as ``job_id``; False if another live job has it."""
    now = timezone.now()
    free = Q(state__in=[IntentState.REQUESTED, IntentState.RETRYING])
    mine_or_dead = Q(state=IntentState.APPLYING) & (
        Q(lease_owner=job_id) | Q(next_attempt_at__lt=now)
    )
    return bool(
        OutcomeIntent.objects.filter(free | mine_or_dead, pk=intent_id).update(
            state=IntentState.APPLYING,
            lease_owner=job_id,
            next_attempt_at=now + datetime.timedelta(seconds=lease_seconds()),
            job_id=job_id,
        )
    )


def _extend(intent_id: int, job_id: int) -> int:
    return OutcomeIntent.objects.filter(
        pk=intent_id, state=IntentState.APPLYING, lease_owner=job_id
    ).update(next_attempt_at=timezone.now() + datetime.timedelta(seconds=lease_seconds()))


def renew_lease(intent: OutcomeIntent, job_id: int) -> None:
    """Extend the lease after a batch; :class:`LeaseLost` if another job has it now."""
    if not _extend(intent.pk, job_id):
        raise LeaseLost


class LeaseKeeper:
    """Keeps the lease (and the job's heartbeat) fresh from a thread while a node command
    runs longer than the lease, so a slow node or a slow SSH connect is not mistaken for a
    dead worker. It dies with the worker process, which is the point: then the lease runs
    out. Whether the lease was lost is checked by the job itself, after each batch."""

    def __init__(self, intent_id: int, job_id: int) -> None:
        self.intent_id, self.job_id = intent_id, job_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease-keeper")

    def __enter__(self) -> LeaseKeeper:
        # Inside an outer transaction (tasks run in-process in a test's transaction) the
        # thread's own connection could wait on the row the caller holds: not needed there.
        if not transaction.get_connection().in_atomic_block:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        from ums.models import Job

        try:
            while not self._stop.wait(max(1.0, lease_seconds() / 3)):
                if not _extend(self.intent_id, self.job_id):
                    return
                Job.objects.filter(pk=self.job_id, status=Job.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        except Exception:  # a keeper must never take the worker down
            logger.exception("keeping the lease of held-mail request %s", self.intent_id)
        finally:
            connections.close_all()


# ---------------------------------------------------------------------- the job


def run(intent_id: int, job_id: int, reporter: jobs.Reporter) -> dict[str, Any]:
    """Apply request ``intent_id`` as job ``job_id``; the job's result."""
    from . import actions

    if not take_lease(intent_id, job_id):
        reporter.say(gettext_noop("another job is applying this request; nothing to do here"))
        return {"skipped": True}
    intent = OutcomeIntent.objects.select_related("requested_by").get(pk=intent_id)
    actor = intent.requested_by
    try:
        with LeaseKeeper(intent_id, job_id):
            if not intent.claimed_all:
                actions.claim_matches(actor=actor, intent=intent, job_id=job_id, reporter=reporter)
            errors, warnings = _apply_pending(actor, intent, job_id, reporter)
    except LeaseLost:
        reporter.say(gettext_noop("another job took this request over; stopping"))
        return {"skipped": True}
    return _conclude(actor, intent, job_id, errors, warnings, reporter)


def _node_error(node_name: str, error: str) -> str:
    return (_("Node %(node)s: %(error)s") % {"node": node_name, "error": error})[:2000]


def _apply_pending(
    actor: Any, intent: OutcomeIntent, job_id: int, reporter: jobs.Reporter
) -> tuple[dict[int, str], list[dict[str, Any]]]:
    """Work through the pending messages node by node; {row id: error} of what failed."""
    from . import actions

    total = HeldMessage.objects.filter(intent=intent).count()
    settled = total - pending_rows(intent).count()
    reporter.progress(settled, total)
    errors: dict[int, str] = {}
    warnings: list[dict[str, Any]] = []
    node_ids = list(pending_rows(intent).order_by().values_list("node_id", flat=True).distinct())
    for node_id in node_ids:
        node = Node.objects.filter(pk=node_id).first() if node_id is not None else None
        rows = pending_rows(intent).filter(node_id=node_id)
        if node is None:
            # Nothing can ever carry this out: give these messages up at once.
            error = _("The node of this message no longer exists.")
            given_up = list(rows)
            actions.give_up_rows(actor=actor, intent=intent, rows=given_up, error=error)
            errors.update(dict.fromkeys((r.pk for r in given_up), error))
            continue
        last = 0
        try:
            with session(node) as conn:
                while True:
                    batch = list(rows.filter(pk__gt=last).order_by("pk")[:CHUNK])
                    if not batch:
                        break
                    last = batch[-1].pk
                    by_queue_id = {r.queue_id: r for r in batch}
                    change = nodeops.apply_marked(
                        conn, NODE_OPERATION[intent.outcome], intent.token, list(by_queue_id)
                    )
                    failed = {
                        by_queue_id[q].pk: _node_error(node.hostname, f"{e}\n{change.output}")
                        for q, e in change.failed.items()
                    }
                    warnings += actions.settle(
                        actor=actor,
                        intent=intent,
                        done=[by_queue_id[q] for q in change.done],
                        gone=[by_queue_id[q] for q in change.absent],
                        failed=failed,
                    )
                    errors.update(failed)
                    settled += len(change.done) + len(change.absent)
                    renew_lease(intent, job_id)
                    reporter.progress(settled, total)
        except (ConnectorError, nodeops.QueueCommandFailed, nodeops.InvalidQueueId) as exc:
            if isinstance(exc, ConnectorError):
                detail = describe_error(exc)
            else:
                detail = f"{exc} {getattr(exc, 'output', '')}".strip()
            error = _node_error(node.hostname, detail)
            reporter.say(
                gettext_noop("Node %(node)s: %(error)s"), node=node.hostname, error=detail[:2000]
            )
            left = list(rows.values_list("pk", flat=True))
            HeldMessage.objects.filter(pk__in=left, intent=intent).update(node_error=error)
            errors.update(dict.fromkeys(left, error))
    return errors, warnings


def _conclude(
    actor: Any,
    intent: OutcomeIntent,
    job_id: int,
    errors: dict[int, str],
    warnings: list[dict[str, Any]],
    reporter: jobs.Reporter,
) -> dict[str, Any]:
    from . import actions

    counts = status_counts(intent)
    left = pending_rows(intent).count()
    result = {
        "counts": counts,
        "pending": left,
        "failed": [{"id": pk, "error": e} for pk, e in list(errors.items())[:MAX_LISTED]],
        "warnings": (list(intent.result.get("warnings", [])) + warnings)[:MAX_LISTED],
    }
    mine = OutcomeIntent.objects.filter(
        pk=intent.pk, state=IntentState.APPLYING, lease_owner=job_id
    )
    now = timezone.now()
    if not left:
        mine.update(
            state=IntentState.DONE,
            finished_at=now,
            lease_owner=None,
            next_attempt_at=None,
            error="",
            result=result,
        )
        reporter.say(
            gettext_noop(
                "done: %(done)s confirmed, %(gone)s had left the queue, %(onhold)s back on hold"
            ),
            done=counts["done"],
            gone=counts["gone"],
            onhold=counts["onhold"],
        )
        return result
    reason = _summarise(errors) or _("The node did not confirm every message.")
    intent.refresh_from_db(fields=["attempts"])
    if intent.attempts >= max_attempts():
        actions.give_up(actor=actor, intent=intent, error=reason, lease_owner=job_id)
        reporter.say(
            gettext_noop("gave up after %(attempts)s attempts: %(reason)s"),
            attempts=intent.attempts,
            reason=reason,
        )
        raise jobs.PermanentJobError(reason)
    mine.update(
        state=IntentState.RETRYING,
        lease_owner=None,
        next_attempt_at=now + backoff(intent.attempts),
        error=reason,
        result=result,
    )
    reporter.say(
        gettext_noop("%(count)s message(s) not confirmed yet, retrying later: %(reason)s"),
        count=left,
        reason=reason,
    )
    return result


def _summarise(errors: dict[int, str]) -> str:
    by_error: dict[str, int] = defaultdict(int)
    for error in errors.values():
        by_error[error] += 1
    return "; ".join(error for error, _count in sorted(by_error.items(), key=lambda i: -i[1])[:3])


def status_counts(intent: OutcomeIntent) -> dict[str, int]:
    """How the request's messages ended: confirmed, left by other means, back on hold."""
    rows = HeldMessage.objects.filter(intent=intent)
    target = TARGET_STATUS[intent.outcome]
    return {
        "done": rows.filter(status=target).count(),
        "gone": rows.filter(status=Status.GONE).count(),
        "onhold": rows.filter(status=Status.ONHOLD, outcome="").count(),
        "pending": rows.filter(status=Status.ONHOLD).exclude(outcome="").count(),
    }


# ---------------------------------------------------------------------- re-driving


def redrive(intent: OutcomeIntent, *, reason: str) -> Any:
    """Start a new job for ``intent`` (the reconciler's call; the caller claimed the
    re-drive). The previous job, if it still looks alive, is marked abandoned."""
    from ums.models import Job

    from . import actions

    job = jobs.enqueue(
        "spamhold.apply",
        actor=intent.requested_by,
        title=actions.job_title(intent.outcome),
        customer_path=intent.customer_path,
        params={"intent": intent.pk},
    )
    if intent.job_id and intent.job_id != job.pk:
        Job.objects.filter(pk=intent.job_id, status__in=[Job.PENDING, Job.RUNNING]).update(
            status=Job.FAILED,
            finished_at=timezone.now(),
            error=f"{reason}; continued by job {job.pk}",
        )
    OutcomeIntent.objects.filter(pk=intent.pk).update(job_id=job.pk)
    return job


def due(limit: int = 100) -> list[OutcomeIntent]:
    """Pending requests whose lease ran out or whose retry is due (the partial index)."""
    return list(
        OutcomeIntent.objects.filter(state__in=PENDING_STATES, next_attempt_at__lte=timezone.now())
        .select_related("requested_by")
        .order_by("next_attempt_at")[:limit]
    )


def claim_redrive(intent: OutcomeIntent) -> bool:
    """Conditionally take the re-drive of ``intent`` (two reconcilers never both do)."""
    now = timezone.now()
    with transaction.atomic():
        taken = OutcomeIntent.objects.filter(
            pk=intent.pk,
            state=intent.state,
            next_attempt_at=intent.next_attempt_at,
        ).update(
            state=IntentState.REQUESTED,
            lease_owner=None,
            attempts=intent.attempts + 1,
            next_attempt_at=now + backoff(intent.attempts + 1),
        )
    if taken:
        intent.attempts += 1
    return bool(taken)
