"""The replication scheduler (``UMS_REPLICATION_CHECK_INTERVAL``), level-triggered:
each pass assigns missing replicas, starts a sync of every domain whose replicas are due
(or new, or fenced), raises or resolves lag alerts, and fails over domains whose primary
the metric sweep has marked offline for longer than their policy's delay when the policy
allows it (the slow fallback: the liveness probe of :mod:`.autofailover`, task
``replication.probe``, normally fails them over well before).
"""

from __future__ import annotations

import datetime
from typing import Any

from celery import shared_task
from django.utils import timezone
from django.utils.translation import gettext as _

from deploy.models import DomainPlacement
from servers import actions as server_actions
from servers.choices import REACHABLE_STATUSES, NodeStatus
from ums import auditing

from . import actions, policy
from .failover import FAILBACK_JOB, FAILOVER_JOB, SYNC_JOB
from .models import DomainReplica, PrimaryProbe

LAG_ALERT = "replication_lag"


def schedule(now: datetime.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    assigned = policy.assign()
    table = policy.policies_by_path()
    started: list[str] = []
    failovers: list[str] = []
    alerts: list[str] = []
    replicas = list(DomainReplica.objects.select_related("domain", "node"))
    by_domain: dict[int, list[DomainReplica]] = {}
    for replica in replicas:
        by_domain.setdefault(replica.domain_id, []).append(replica)
    placements = {
        p.domain_id: p
        for p in DomainPlacement.objects.filter(domain_id__in=by_domain).select_related("node")
    }
    for domain_id, rows in by_domain.items():
        placement = placements.get(domain_id)
        if placement is None:
            continue
        domain = rows[0].domain
        pol = policy.effective(domain.customer_path, table)
        primary = placement.node
        busy = actions.running(domain, (SYNC_JOB, FAILOVER_JOB, FAILBACK_JOB))
        alerts += _lag_alerts(rows, pol, now)
        if primary.status == NodeStatus.OFFLINE:
            if busy is None and _failover_due(primary, pol, now, rows):
                job = actions.start_failover(actor=None, domain=domain)
                auditing.record(
                    "replication.auto_failover",
                    obj=domain,
                    actor=None,
                    extra={"job": job.pk, "from": primary.hostname},
                )
                failovers.append(domain.name)
            continue
        if busy is not None or primary.status not in REACHABLE_STATUSES:
            continue
        interval = datetime.timedelta(minutes=pol.sync_interval_minutes)
        if any(
            r.state != DomainReplica.SYNCED or r.synced_at is None or r.synced_at + interval <= now
            for r in rows
            if r.node.status in REACHABLE_STATUSES and r.node.status != NodeStatus.OFFLINE
        ):
            actions.enqueue_sync(domain)
            started.append(domain.name)
    return {"assigned": assigned, "started": started, "failovers": failovers, "alerts": alerts}


def _failover_due(primary: Any, pol: policy.Policy, now: datetime.datetime, rows: list) -> bool:
    if not pol.auto_failover:
        return False
    if not any(r.state == DomainReplica.SYNCED for r in rows):
        return False
    if _probe_answers(primary, now):
        return False
    seen = primary.last_seen_at
    return seen is None or seen + datetime.timedelta(seconds=pol.failover_delay_seconds) <= now


def _probe_answers(primary: Any, now: datetime.datetime) -> bool:
    """The liveness probe reached the primary within the last two minutes and has not
    failed since: the sweep's "offline" is about its metrics, not its life (a failover
    job would only refuse it)."""
    row = PrimaryProbe.objects.filter(node=primary).first()
    recent = now - datetime.timedelta(minutes=2)
    return bool(row and row.failing_since is None and row.answered_at and row.answered_at > recent)


def _lag_alerts(rows: list[DomainReplica], pol: policy.Policy, now: datetime.datetime) -> list[str]:
    raised = []
    limit = pol.max_lag_minutes * 60
    for replica in rows:
        lag = policy.lag_seconds(replica, now)
        if lag is None and replica.state == DomainReplica.NEW:
            lag = (now - replica.created_at).total_seconds()
        over = lag is not None and lag > limit
        if over and not replica.lag_alerted:
            server_actions.raise_alert(
                replica.node,
                LAG_ALERT,
                _("%(domain)s on %(node)s is %(minutes)d minutes behind (limit %(limit)d).")
                % {
                    "domain": replica.domain.name,
                    "node": replica.node.hostname,
                    "minutes": int((lag or 0) // 60),
                    "limit": pol.max_lag_minutes,
                },
            )
            DomainReplica.objects.filter(pk=replica.pk).update(lag_alerted=True)
            raised.append(f"{replica.domain.name}@{replica.node.hostname}")
        elif not over and replica.lag_alerted:
            DomainReplica.objects.filter(pk=replica.pk).update(lag_alerted=False)
            still = DomainReplica.objects.filter(node=replica.node, lag_alerted=True).exists()
            if not still:
                server_actions.resolve_alerts(replica.node, LAG_ALERT)
    return raised


@shared_task(name="replication.schedule", acks_late=True)
def schedule_replication() -> Any:
    return schedule()


@shared_task(name="replication.probe", acks_late=True)
def probe_primaries() -> Any:
    from .autofailover import run

    return run()
