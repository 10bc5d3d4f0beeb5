"""Automatic failover, independent of the metric sweep (``replication.probe``, every
``UMS_FAILOVER_PROBE_INTERVAL`` seconds, default 10).

Only primaries whose failover is automatic are probed: the primary of each mail domain
whose replication policy has ``auto_failover`` on and that has a synced replica, and the
primary of each zone's cloud database whose customer's policy has it on and that has a
replicating member. A probe is a TCP connect with a short timeout
(``UMS_FAILOVER_PROBE_TIMEOUT``, default 2 s) to the node's SSH port and its service port
(IMAPS 993 for a mail primary, MariaDB 3306 for a cloud DB primary), all nodes at once:
no command runs, nothing is logged in on, so the rest of the fleet pays nothing.

A probe *fails* when no port accepts a connection: a node whose sshd still answers is not
dead (the failover job refuses it too: that is a failback), and one whose service still
answers still serves. One answered probe resets the count; so does a silence (no probe
for three intervals: its worker died, beat stopped), since the node may have answered
then. A primary is **down** once its probes have failed at least
``UMS_FAILOVER_PROBE_FAILURES`` times in a row (default 3) over at least the policy's
``failover_delay_seconds`` (default 30): a blip (sshd restarted, a daemon restarting, a
lost packet or two) shorter than the delay never fails over. Then the failover job
starts, the same audited job as the manual one (for mail ``replication.failover``, for the
cloud database ``clouddb.failover``): it checks over SSH again that the primary is gone,
and fences it.

With the defaults, from the moment the primary dies: up to one interval before the first
failed probe, the delay, up to one interval more, then the job (promote, converge, flush):
about 40-55 s (measured: 43.5-48.9 s, see the README).
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from deploy.models import DomainPlacement
from servers.models import Node
from ums import auditing

from . import actions, policy
from .failover import FAILBACK_JOB, FAILOVER_JOB
from .models import DomainReplica, PrimaryProbe

IMAPS_PORT = 993
MARIADB_PORT = 3306


@dataclass
class Target:
    """One primary to probe and what fails over when it is down (with each one's delay)."""

    node: Node
    ports: set[int] = field(default_factory=set)
    domains: list[tuple[Any, int]] = field(default_factory=list)
    clusters: list[tuple[Any, int]] = field(default_factory=list)


def tcp_answers(host: str, ports: Iterable[int], timeout: float) -> bool:
    """True when any of ``ports`` on ``host`` accepts a TCP connection within ``timeout``."""
    for port in sorted(ports):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def _target(targets: dict[int, Target], node: Node, port: int) -> Target:
    target = targets.setdefault(node.pk, Target(node=node))
    target.ports |= {node.ssh_port, port}
    return target


def targets() -> dict[int, Target]:
    """The primaries whose failover is automatic, by node id."""
    table = policy.policies_by_path()
    found: dict[int, Target] = {}
    if not any(p.auto_failover for p in table.values()):
        return found  # the default is off: nothing to probe, one query per pass
    synced = set(
        DomainReplica.objects.filter(state=DomainReplica.SYNCED).values_list("domain_id", flat=True)
    )
    placements = DomainPlacement.objects.filter(domain_id__in=synced).select_related(
        "domain", "node"
    )
    for placement in placements:
        pol = policy.effective(placement.domain.customer_path, table)
        if pol.auto_failover:
            target = _target(found, placement.node, IMAPS_PORT)
            target.domains.append((placement.domain, pol.failover_delay_seconds))
    from clouddb.models import CloudDbCluster, CloudDbMember

    clusters = CloudDbCluster.objects.filter(
        primary__isnull=False, members__state=CloudDbMember.REPLICA
    ).select_related("primary", "zone")
    for cluster in clusters.distinct():
        pol = policy.effective(cluster.customer_path, table)
        if pol.auto_failover:
            target = _target(found, cluster.primary, MARIADB_PORT)
            target.clusters.append((cluster, pol.failover_delay_seconds))
    return found


def series_gap() -> datetime.timedelta:
    """Longer than this between two probes of a node, its failures are not one run: three
    intervals (a late beat, a busy worker) plus a pass's worst case (each port's timeout)."""
    interval = float(getattr(settings, "UMS_FAILOVER_PROBE_INTERVAL", 10))
    timeout = float(getattr(settings, "UMS_FAILOVER_PROBE_TIMEOUT", 2.0))
    return datetime.timedelta(seconds=3 * interval + 2 * timeout)


def probe(found: dict[int, Target], now: datetime.datetime) -> dict[int, PrimaryProbe]:
    """Probe every target at once and record the result; forget nodes no longer probed."""
    timeout = float(getattr(settings, "UMS_FAILOVER_PROBE_TIMEOUT", 2.0))
    PrimaryProbe.objects.exclude(node_id__in=list(found)).delete()
    if not found:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(found))) as pool:
        answers = dict(
            zip(
                found,
                pool.map(
                    lambda t: tcp_answers(t.node.ssh_address, t.ports, timeout), found.values()
                ),
                strict=True,
            )
        )
    rows = {r.node_id: r for r in PrimaryProbe.objects.filter(node_id__in=list(found))}
    for node_id, answered in answers.items():
        row = rows.get(node_id) or PrimaryProbe(node_id=node_id)
        unobserved = row.checked_at is not None and now - row.checked_at > series_gap()
        row.checked_at = now
        if answered:
            row.failing_since, row.failures, row.answered_at = None, 0, now
        else:
            if unobserved:
                # Nobody probed for a while (the probe's worker died, beat stopped): the
                # node may have answered meanwhile, so the failures before the silence
                # and this one are not "in a row". A new run starts here, or a blip right
                # after a worker restart would fail over a healthy node.
                row.failing_since, row.failures = None, 0
            row.failing_since = row.failing_since or now
            row.failures += 1
        row.save()
        rows[node_id] = row
    return rows


def is_down(row: PrimaryProbe | None, delay: int, now: datetime.datetime) -> bool:
    """Failed enough probes in a row, over at least ``delay`` seconds."""
    if row is None or row.failing_since is None:
        return False
    needed = int(getattr(settings, "UMS_FAILOVER_PROBE_FAILURES", 3))
    return row.failures >= needed and row.failing_since + datetime.timedelta(seconds=delay) <= now


def run(now: datetime.datetime | None = None) -> dict[str, Any]:
    """One probe pass: probe, then start the failover of whatever is down."""
    now = now or timezone.now()
    found = targets()
    rows = probe(found, now)
    summary: dict[str, Any] = {"probed": len(found), "down": [], "failovers": []}
    for node_id, target in found.items():
        row = rows.get(node_id)
        if row is None or row.failing_since is None:
            continue
        for domain, delay in target.domains:
            if is_down(row, delay, now) and _fail_over_domain(domain, target.node, row):
                summary["failovers"].append(domain.name)
        for cluster, delay in target.clusters:
            if is_down(row, delay, now) and _fail_over_cluster(cluster, target.node, row):
                summary["failovers"].append(f"clouddb:{cluster.zone.name}")
        if any(is_down(row, d, now) for _, d in (*target.domains, *target.clusters)):
            summary["down"].append(target.node.hostname)
    return summary


def _extra(node: Node, row: PrimaryProbe, job: Any) -> dict[str, Any]:
    return {
        "job": job.pk,
        "from": node.hostname,
        "failed_probes": row.failures,
        "failing_since": row.failing_since.isoformat(),
    }


def _fail_over_domain(domain: Any, node: Node, row: PrimaryProbe) -> bool:
    # A sync job of the dead primary does not hold the failover back (it fails on its
    # own); a failover or failback already running does.
    if actions.running(domain, (FAILOVER_JOB, FAILBACK_JOB)) is not None:
        return False
    try:
        # One transaction: the audit record is written before the job can run (a job
        # runs after commit; in-process, inside this call).
        with transaction.atomic():
            job = actions.start_failover(actor=None, domain=domain)
            auditing.record(
                "replication.auto_failover", obj=domain, actor=None, extra=_extra(node, row, job)
            )
    except ValidationError:  # no synced replica any more, or one started meanwhile
        return False
    return True


def _fail_over_cluster(cluster: Any, node: Node, row: PrimaryProbe) -> bool:
    from clouddb import actions as clouddb_actions
    from clouddb.reconcile import failover_running

    if failover_running(cluster):
        return False
    try:
        with transaction.atomic():
            job = clouddb_actions.start_failover(actor=None, cluster=cluster)
            auditing.record(
                "clouddb.auto_failover", obj=cluster, actor=None, extra=_extra(node, row, job)
            )
    except ValidationError:
        return False
    return True
