"""The ``jobs`` reconciler: jobs whose dispatch was lost or whose worker died run again.

One indexed query per pass (the partial index ``job_unfinished`` holds only pending and
running rows, so 100,000 finished jobs cost nothing): pending jobs due again
(``next_attempt_at`` passed: never claimed, or a retry whose backoff ended) and running
jobs. A running job is abandoned when its heartbeat is older than
``UMS_JOB_STALE_SECONDS`` or its process on this host is gone; it goes back to pending
with backoff, or fails with a human reason when it may not run again (see
:func:`ums.jobs.give_up_reason`).
"""

from __future__ import annotations

import datetime
from typing import Any

from django.db.models import Q
from django.utils import timezone

from ums import jobs
from ums.models import Job
from ums.reconcile import register

#: Jobs handled per pass; the rest wait for the next pass (a few seconds).
BATCH = 200


@register("jobs")
def redrive_jobs() -> dict[str, Any]:
    now = timezone.now()
    stale = now - jobs.stale_after()
    rows = list(
        Job.objects.filter(
            Q(status=Job.RUNNING) | Q(status=Job.PENDING, next_attempt_at__lte=now)
        ).values_list("pk", "status", "kind", "attempts", "owner", "heartbeat_at", "created_at")[
            :BATCH
        ]
    )
    report = {"dispatched": 0, "requeued": 0, "given_up": 0}
    for pk, status, kind, attempts, owner, heartbeat_at, created_at in rows:
        if status == Job.PENDING:
            if _redispatch(pk, created_at):
                report["dispatched"] += 1
            continue
        dead = (heartbeat_at is None or heartbeat_at < stale) or (
            bool(owner) and jobs.owner_is_gone(owner)
        )
        if not dead:
            continue
        reason = jobs.give_up_reason(kind, attempts)
        if reason:
            report["given_up"] += jobs.fail_abandoned(pk, attempts, reason)
        elif jobs.requeue_abandoned(pk, attempts):
            report["requeued"] += 1
            if jobs.retry_delay(attempts) == datetime.timedelta(0) and _redispatch(pk, created_at):
                report["dispatched"] += 1
    return {k: v for k, v in report.items() if v}


def _redispatch(pk: int, created_at: datetime.datetime) -> bool:
    """Dispatch a due pending job once more (claimed by a conditional UPDATE, so two
    reconcilers never both send it). The next try waits as long as the job is old,
    between ``UMS_JOB_STALE_SECONDS`` and 5 minutes, so a long queue is not flooded."""
    now = timezone.now()
    wait = min(max(now - created_at, jobs.stale_after()), jobs.MAX_REDISPATCH_DELAY)
    won = Job.objects.filter(pk=pk, status=Job.PENDING, next_attempt_at__lte=now).update(
        next_attempt_at=now + wait
    )
    if won:
        jobs._dispatch(pk)
    return bool(won)
