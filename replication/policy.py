"""The replication policy in effect for a domain, and which nodes get its replicas.

A domain follows the :class:`~replication.models.ReplicationPolicy` of its nearest
customer that has one (its own customer first, then up the tree), else the defaults
below: one replica, anywhere, synced every 5 minutes, an alert beyond 30 minutes of lag,
no automatic failover.

Replica nodes are chosen like placement (:mod:`deploy.placement`): serving IMAP nodes of
the domain's customer tree, never the primary, filtered by the policy's zone rule, the
node with the fewest replicas first, then the lowest id. :func:`assign` is level-triggered
(the scheduler calls it every pass): an IMAP node approved where others already hold
domains is picked up by the next pass, and their data starts flowing to it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from deploy.desired import SERVING_STATUSES
from deploy.models import DomainPlacement
from deploy.placement import ancestor_paths
from servers.choices import Redundancy
from servers.models import Node
from ums import auditing

from .models import DomainReplica, ReplicationPolicy


@dataclass(frozen=True)
class Policy:
    replicas: int = 1
    zone_rule: str = ReplicationPolicy.ANY_ZONE
    sync_interval_minutes: int = 5
    max_lag_minutes: int = 30
    auto_failover: bool = False
    failover_delay_seconds: int = 30


DEFAULT = Policy()


def policies_by_path() -> dict[str, Policy]:
    return {
        row.customer_path: Policy(**{f: getattr(row, f) for f in ReplicationPolicy.audit_fields})
        for row in ReplicationPolicy.objects.all()
    }


def effective(customer_path: str, table: dict[str, Policy] | None = None) -> Policy:
    """The nearest customer's policy (own first), else :data:`DEFAULT`."""
    table = policies_by_path() if table is None else table
    for path in reversed(ancestor_paths(customer_path)):
        if path in table:
            return table[path]
    return DEFAULT


def source_of(customer_path: str, *, upto_parent: bool = False) -> ReplicationPolicy | None:
    """The policy row in effect for ``customer_path`` (its own first, or from its parent
    up with ``upto_parent``); None: the built-in defaults apply."""
    paths = ancestor_paths(customer_path)
    if upto_parent:
        paths = paths[:-1]
    rows = {
        r.customer_path: r
        for r in ReplicationPolicy.objects.filter(customer_path__in=paths).select_related(
            "customer"
        )
    }
    for path in reversed(paths):
        if path in rows:
            return rows[path]
    return None


def _zone_ok(rule: str, primary_zone: int, zone: int) -> bool:
    if rule == ReplicationPolicy.SAME_ZONE:
        return zone == primary_zone
    if rule == ReplicationPolicy.OTHER_ZONE:
        return zone != primary_zone
    return True


def assign() -> list[tuple[str, str]]:
    """Create the replica rows every placed domain's policy asks for and lacks;
    ``(domain, node)`` of each new one (audited)."""
    if not getattr(settings, "UMS_CONVERGE", {}).get("mail_store_pool"):
        return []  # replicas are ZFS datasets: none without a ZFS mail store
    table = policies_by_path()
    nodes = [
        n
        for n in Node.objects.filter(status__in=SERVING_STATUSES).order_by("pk")
        if "imap" in (n.roles or ())
    ]
    if len(nodes) < 2:
        return []
    by_id = {n.pk: n for n in nodes}
    existing: dict[int, set[int]] = {}
    load: Counter[int] = Counter()
    for domain_id, node_id in DomainReplica.objects.values_list("domain_id", "node_id"):
        existing.setdefault(domain_id, set()).add(node_id)
        load[node_id] += 1
    created: list[tuple[str, str]] = []
    placements = DomainPlacement.objects.select_related("domain", "domain__customer", "node__zone")
    for placement in placements.order_by("domain__name"):
        domain = placement.domain
        policy = effective(domain.customer_path, table)
        have = existing.get(domain.pk, set())
        missing = policy.replicas - len(have)
        if missing <= 0:
            continue
        tree = set(ancestor_paths(domain.customer_path))
        candidates = [
            n
            for n in by_id.values()
            if n.pk != placement.node_id
            and n.pk not in have
            and n.customer_path in tree
            and _zone_ok(policy.zone_rule, placement.node.zone_id, n.zone_id)
        ]
        # HOT-WARM: the other zones hold the warm replicas, so they come first.
        warm = placement.node.zone.redundancy == Redundancy.HOT_WARM
        ranked = sorted(
            candidates,
            key=lambda n, w=warm, z=placement.node.zone_id: (
                0 if w and n.zone_id != z else 1,
                load[n.pk],
                n.pk,
            ),
        )
        for node in ranked[:missing]:
            _, made = DomainReplica.objects.get_or_create(
                domain=domain, node=node, defaults={"customer_path": domain.customer_path}
            )
            if not made:
                continue
            load[node.pk] += 1
            auditing.record(
                "replica.assigned",
                obj=domain,
                actor=None,
                after={"node": node.hostname, "primary": placement.node.hostname},
            )
            created.append((domain.name, node.hostname))
    return created


def lag_seconds(replica: DomainReplica, now: Any) -> float | None:
    """Seconds of mail the replica lacks (now minus its last completed sync's snapshot);
    None before its first sync completed."""
    if replica.synced_at is None or replica.state != DomainReplica.SYNCED:
        return None
    return max(0.0, (now - replica.synced_at).total_seconds())
