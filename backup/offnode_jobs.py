"""Jobs and the beat task of off-node copies: a node's copy pass, the rebuild of a lost
node, and the scheduler that starts copy passes (``UMS_OFFNODE_CHECK_INTERVAL``).

The scheduler starts a pass for each enabled setting whose interval has elapsed, unless a
copy or a snapshot pass of that node is pending or running: copies follow the snapshot
pass, so they carry the snapshots it just took.
"""

from __future__ import annotations

import datetime
from typing import Any

from celery import shared_task
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_noop

from mail.models import Domain
from servers.choices import REACHABLE_STATUSES
from servers.models import Node
from ums import jobs
from ums.models import Job

from . import actions as backup_actions
from . import offnode_actions, offnode_run, rebuild
from .models_offnode import OffnodeSetting


@jobs.handler(offnode_actions.COPY_JOB)
def offnode_copy(job: Job, reporter: jobs.Reporter) -> dict:
    setting = (
        OffnodeSetting.objects.filter(node_id=job.params.get("node_id"))
        .select_related("node__customer", "backup_node", "target")
        .first()
    )
    if setting is None:
        raise jobs.PermanentJobError("The node has no off-node copy setting.")
    summary = offnode_run.run_setting(setting, reporter.say, key=job.pk)
    errors = summary["errors"]
    OffnodeSetting.objects.filter(pk=setting.pk).update(
        last_run_at=timezone.now(),
        last_ok=not errors,
        last_message=("; ".join(errors) or "ok")[:1000],
    )
    if errors:
        # Retried by the job machinery; a retry sends only what is still missing.
        raise RuntimeError("; ".join(errors)[:2000])
    return summary


@jobs.handler(offnode_actions.REBUILD_JOB)
def rebuild_node(job: Job, reporter: jobs.Reporter) -> dict:
    from deploy.nodes import session

    lost = Node.objects.filter(pk=job.params.get("node_id")).first()
    new = Node.objects.filter(pk=job.params.get("new_node_id")).first()
    if lost is None or new is None:
        raise jobs.PermanentJobError("A node of this rebuild was deleted.")
    domains = list(
        Domain.objects.filter(pk__in=job.params.get("domain_ids") or []).order_by("name")
    )
    reporter.progress(0, len(domains))
    with session(new) as conn:
        for index, domain in enumerate(domains, 1):
            copy = rebuild.source_copy(domain.name, job.params.get("prefer", ""))
            if copy is None:
                raise jobs.PermanentJobError(f"No off-node copy of {domain.name}.")
            rebuild.receive_domain(conn, domain, copy, reporter.say)
            reporter.progress(index)
    marked = rebuild.move_placements(domains, lost, new)
    reporter.say(
        gettext_noop("%(count)s domains now placed on %(node)s; converging %(nodes)s nodes"),
        count=len(domains),
        node=new.hostname,
        nodes=len(marked),
    )
    return {"domains": [d.name for d in domains], "converge": marked}


def schedule(now: datetime.datetime | None = None) -> dict[str, Any]:
    """Start a copy pass for every setting that is due; the node hostnames started."""
    now = now or timezone.now()
    busy = set(
        Job.objects.filter(
            kind__in=(offnode_actions.COPY_JOB, backup_actions.SNAPSHOT_JOB),
            object_type="servers.node",
            status__in=(Job.PENDING, Job.RUNNING),
        ).values_list("object_id", flat=True)
    )
    settings = OffnodeSetting.objects.filter(
        enabled=True, node__status__in=REACHABLE_STATUSES
    ).filter(Q(backup_node__isnull=False) | Q(target__isnull=False))
    started = []
    for setting in settings.select_related("node"):
        if str(setting.node_id) in busy:
            continue
        due_at = setting.last_run_at and setting.last_run_at + datetime.timedelta(
            minutes=setting.interval_minutes
        )
        if due_at and due_at > now:
            continue
        offnode_actions.enqueue_copy(setting)
        started.append(setting.node.hostname)
    return {"started": started}


@shared_task(name="backup.schedule_offnode", acks_late=True)
def schedule_offnode() -> Any:
    from . import offnode_verify_run

    # Verification is due in days, not minutes: the same beat serves both.
    return {**schedule(), **offnode_verify_run.schedule()}
