"""The ``converge`` reconciler: every dirty node converges, whatever died on the way.

A node is dirty while its desired generation is ahead of the applied one
(:mod:`deploy.dirty`). One query on a partial index that holds only dirty nodes finds
those whose next attempt is due; each gets a converge job unless its lease is held (a
converge is running) or a converge job is already queued or running (the ``jobs``
reconciler re-drives that one if its worker died). A node whose converges fail waits
longer each time (backoff in :func:`deploy.dirty.retry_delay`) but is never given up:
a node that comes back heals by itself.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from ums.models import Job
from ums.reconcile import register

from . import dirty
from .models import NodeConvergeState


@register("converge")
def converge_dirty_nodes() -> dict[str, Any]:
    if not dirty.enabled():
        return {}
    states = dirty.due()
    if not states:
        return {}
    now = timezone.now()
    busy_jobs = set(
        Job.objects.filter(
            pk__in=[s.queued_job_id for s in states if s.queued_job_id],
            status__in=(Job.PENDING, Job.RUNNING),
        ).values_list("pk", flat=True)
    )
    report = {"queued": 0, "busy": 0, "skipped": 0}
    for state in states:
        if state.node.status not in dirty.DIRTY_STATUSES:
            # Pending or decommissioned: looked at again rarely (approval queues its own).
            NodeConvergeState.objects.filter(pk=state.pk).update(
                next_attempt_at=now + dirty.retry_delay(99)
            )
            report["skipped"] += 1
            continue
        if (state.lease_expires_at and state.lease_expires_at > now) or (
            state.queued_job_id in busy_jobs
        ):
            report["busy"] += 1
            continue
        # Not again before this converge had its chance (it resets the time when it
        # ends either way); a new change makes the node due at once.
        NodeConvergeState.objects.filter(pk=state.pk).update(
            next_attempt_at=now + dirty.lease_length()
        )
        reason = f"generation {state.desired_generation} not applied yet"
        if state.failures:
            reason += f" (retry after {state.failures} failure(s))"
        report["queued"] += len(dirty.ensure_queued([state.node_id], reason=reason))
    return {k: v for k, v in report.items() if v}


from . import storage_reconcile  # noqa: E402,F401 (registers the "storage" reconciler)
