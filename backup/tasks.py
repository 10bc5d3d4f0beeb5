"""The snapshot scheduler (Celery beat, ``UMS_SNAPSHOT_INTERVAL``).

For every reachable IMAP node holding domains, it compares the snapshots recorded from the
node (observed state) with what the domains' effective policies want now; a node with
anything due or beyond retention gets one ``backup.snapshot_node`` job, unless one is
already pending or running. The job itself reads the node before it acts, so a stale
record costs at most a pass that finds nothing to do.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from servers.choices import REACHABLE_STATUSES
from ums import jobs
from ums.models import Job

from . import actions, exclusion_policy, snapshot_run, snapshots, store_settings
from . import policy as policy_mod
from .models import Snapshot


def schedule(now: Any = None) -> dict[str, Any]:
    """Enqueue a snapshot pass for each node with something due; what was started."""
    from deploy.models import DomainPlacement

    conf = getattr(settings, "UMS_CONVERGE", {})
    if not conf.get("mail_store_pool"):
        return {"skipped": "no ZFS mail store"}
    now = now or timezone.now()
    parent = snapshot_run.layout(conf)
    placements = DomainPlacement.objects.filter(
        node__status__in=REACHABLE_STATUSES, node__roles__contains=["imap"]
    ).select_related("domain__customer", "node")
    recorded: dict[tuple[int, str], set[str]] = defaultdict(set)
    for node_id, dataset, name in Snapshot.objects.values_list("node_id", "dataset", "name"):
        recorded[(node_id, dataset)].add(name)
    busy = set(
        Job.objects.filter(
            kind=actions.SNAPSHOT_JOB,
            object_type="servers.node",
            status__in=(Job.PENDING, Job.RUNNING),
        ).values_list("object_id", flat=True)
    )
    placements = list(placements)
    excluded = exclusion_policy.for_domains([p.domain for p in placements])
    stores = store_settings.policy_overrides({p.node_id for p in placements})
    policies: dict[int, dict[str, Any]] = {}
    due_nodes: dict[int, Any] = {}
    for placement in placements:
        domain, node = placement.domain, placement.node
        if node.pk in due_nodes or str(node.pk) in busy or excluded[domain.pk].domain_excluded:
            continue
        if domain.customer_id not in policies:
            policies[domain.customer_id] = policy_mod.values(domain.customer)
        policy = {**policies[domain.customer_id], **stores.get(node.pk, {})}
        have = recorded[(node.pk, snapshot_run.dataset_of(parent, domain))]
        if snapshots.due(have, policy, now) or snapshots.to_prune(have, policy, now):
            due_nodes[node.pk] = node
    started = []
    for node in due_nodes.values():
        jobs.enqueue(
            actions.SNAPSHOT_JOB,
            actor=None,
            title=f"Scheduled snapshots on {node.hostname}",
            customer_path=node.customer_path,
            target=node,
            params={"node_id": node.pk},
        )
        started.append(node.hostname)
    return {"started": started}


@shared_task(name="backup.schedule_snapshots", acks_late=True)
def schedule_snapshots() -> Any:
    return schedule()


# The daily dump scheduler (backup.schedule_dump) lives with the dump jobs.
from .dumps_jobs import schedule_dump  # noqa: E402, F401


@shared_task(name="backup.cleanup_exports", acks_late=True)
def cleanup_exports() -> Any:
    """Delete controller exports whose download link expired (``UMS_EXPORT_LINK_TTL``)."""
    from . import export

    return {"expired": export.cleanup()}


# The off-node copy scheduler (Celery's autodiscovery imports this module only).
from .offnode_jobs import schedule_offnode  # noqa: E402, F401


@shared_task(name="backup.schedule_tiering", acks_late=True)
def schedule_tiering() -> Any:
    """A tiering pass on every mail store with a policy (``UMS_TIER_INTERVAL``)."""
    from . import tiering

    return tiering.schedule()
