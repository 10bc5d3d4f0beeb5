"""Capacity of each zone: what its users need, what its nodes can do, what they do now.

Three figures per zone and resource (disk IOPS on the mail store nodes, network Mbit/s on
every node of the zone):

- **recommended**: the product sheet's sizing guideline for the users placed in the zone,
  ×3 as the sheet recommends; if the measured load is heavier than the guideline expects,
  the measured load ×3 instead (real users beat a typical-ISP table);
- **declared**: the sum of what the operator says the nodes sustain (node settings; a node
  without a figure is "unknown", never zero, and is named as missing);
- **measured**: the sum over the nodes of each node's 95th percentile over the last day,
  from the rates the metric sweep computes (deploy.metrics).

From them, the sentences that say what a zone needs. Users are counted where their
domain's mail lives (its placement's node), so a zone without mail stores has no users.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Aggregate, Count, FloatField
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from mail.models import Mailbox
from servers import sizing
from servers.choices import NodeStatus, Role
from servers.models import MetricSample, Node, Zone
from ums import scoping

MEASURE_WINDOW = datetime.timedelta(hours=24)
# Measured load above this share of the declared capacity: add capacity before it is full.
HEADROOM = 0.8


class Percentile95(Aggregate):
    function = "PERCENTILE_CONT"
    template = "%(function)s(0.95) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


@dataclass
class Resource:
    """One resource of one zone; ``shortfall`` is what must be added to reach the
    recommendation (0 when enough, None when nothing is declared)."""

    guideline: int
    recommended: int
    declared: int | None
    nodes: int
    undeclared_nodes: int
    measured_p95: float | None
    shortfall: int | None

    @property
    def load_percent(self) -> float | None:
        if self.measured_p95 is None or not self.declared:
            return None
        return round(100.0 * self.measured_p95 / self.declared, 1)


@dataclass
class ZoneCapacity:
    zone: Zone
    users: int
    sizing: sizing.Sizing
    disk: Resource
    network: Resource
    needs: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``short``, ``unknown`` (nothing to compare with) or ``ok``."""
        if any(r.shortfall for r in (self.disk, self.network)) or any(
            (r.load_percent or 0) > HEADROOM * 100 for r in (self.disk, self.network)
        ):
            return "short"
        if self.users and any(r.declared is None for r in (self.disk, self.network)):
            return "unknown"
        return "ok"


def _resource(
    guideline: int, nodes: list[Node], declared_field: str, measured: Mapping[int, float]
) -> Resource:
    declared_values = [getattr(n, declared_field) for n in nodes]
    known = [v for v in declared_values if v is not None]
    rates = [measured[n.pk] for n in nodes if n.pk in measured]
    measured_p95 = round(sum(rates), 1) if rates else None
    recommended = guideline * sizing.RECOMMENDED_FACTOR
    if measured_p95 is not None and measured_p95 > guideline:
        recommended = max(recommended, math.ceil(measured_p95 * sizing.RECOMMENDED_FACTOR))
    declared = sum(known) if known else None
    shortfall = None if declared is None else max(0, recommended - declared)
    return Resource(
        guideline=guideline,
        recommended=recommended,
        declared=declared,
        nodes=len(nodes),
        undeclared_nodes=len(nodes) - len(known),
        measured_p95=measured_p95,
        shortfall=shortfall,
    )


def _needs(users: int, disk: Resource, network: Resource) -> list[str]:
    if not users:
        return []
    needs: list[str] = []
    for resource, name, unit in (
        (disk, _("disk IOPS on the mail stores"), "IOPS"),
        (network, _("network bandwidth"), "Mbit/s"),
    ):
        values = {
            "what": name,
            "unit": unit,
            "recommended": f"{resource.recommended:,}",
            "declared": f"{resource.declared or 0:,}",
            "more": f"{resource.shortfall or 0:,}",
            "n": resource.undeclared_nodes,
        }
        if resource.nodes == 0:
            needs.append(_("No node of this zone provides %(what)s.") % values)
            continue
        if resource.declared is None:
            needs.append(
                _(
                    "Declare the capacity of the nodes (%(what)s) to compare it with the "
                    "%(recommended)s %(unit)s recommended."
                )
                % values
            )
        elif resource.shortfall:
            needs.append(
                _(
                    "Needs %(more)s %(unit)s more %(what)s: %(recommended)s recommended, "
                    "%(declared)s declared."
                )
                % values
            )
        if resource.declared is not None and resource.undeclared_nodes:
            needs.append(
                ngettext(
                    "%(n)d node has no declared capacity for %(what)s; it counts as none.",
                    "%(n)d nodes have no declared capacity for %(what)s; they count as none.",
                    resource.undeclared_nodes,
                )
                % values
            )
        if (resource.load_percent or 0) > HEADROOM * 100:
            needs.append(
                _("Measured %(what)s is %(load)s %% of the declared capacity: add capacity.")
                % {**values, "load": resource.load_percent}
            )
        if resource.measured_p95 is not None and resource.measured_p95 > resource.guideline:
            needs.append(
                _(
                    "Measured %(what)s is above the guideline for this many users: the "
                    "recommendation follows the measured load ×3."
                )
                % values
            )
    return needs


def compute(
    zones: Iterable[Zone],
    nodes: Iterable[Node],
    users_by_zone: Mapping[int, int],
    measured: Mapping[int, tuple[float | None, float | None]],
) -> list[ZoneCapacity]:
    """The capacity of ``zones`` from plain inputs (``measured``: node id → (IOPS p95,
    Mbit/s p95)); kept free of queries so the rules are testable on their own."""
    by_zone: dict[int, list[Node]] = {}
    for node in nodes:
        by_zone.setdefault(node.zone_id, []).append(node)
    disk_rates = {k: v[0] for k, v in measured.items() if v[0] is not None}
    net_rates = {k: v[1] for k, v in measured.items() if v[1] is not None}
    result = []
    for zone in zones:
        zone_nodes = by_zone.get(zone.pk, [])
        users = users_by_zone.get(zone.pk, 0)
        guide = sizing.for_users(users)
        stores = [n for n in zone_nodes if Role.IMAP.value in (n.roles or [])]
        disk = _resource(guide.iops, stores, "disk_iops_capacity", disk_rates)
        network = _resource(guide.bandwidth_mbit, zone_nodes, "network_mbit_capacity", net_rates)
        result.append(ZoneCapacity(zone, users, guide, disk, network, _needs(users, disk, network)))
    return result


def users_by_zone(user: Any) -> tuple[dict[int, int], int]:
    """Mailboxes in ``user``'s scope per zone of their domain's mail store, and how many
    are not placed on a node yet."""
    rows = (
        scoping.scope_queryset(Mailbox.objects.all(), user)
        .values("domain__placement__node__zone_id")
        .annotate(n=Count("pk"))
    )
    counts: dict[int, int] = {}
    unplaced = 0
    for row in rows:
        zone_id = row["domain__placement__node__zone_id"]
        if zone_id is None:
            unplaced += row["n"]
        else:
            counts[zone_id] = row["n"]
    return counts, unplaced


def measured_p95(node_ids: list[int], now: datetime.datetime | None = None) -> dict:
    """node id → (disk IOPS p95, network Mbit/s p95) over the last day of raw samples."""
    since = (now or timezone.now()) - MEASURE_WINDOW
    rows = (
        MetricSample.objects.filter(
            node_id__in=node_ids, resolution=MetricSample.RAW, at__gte=since
        )
        .values("node_id")
        .annotate(iops=Percentile95("disk_iops"), mbit=Percentile95("net_mbit"))
    )
    return {row["node_id"]: (row["iops"], row["mbit"]) for row in rows}


def for_user(user: Any) -> tuple[list[ZoneCapacity], int]:
    """Every zone in scope with its capacity, and the number of unplaced mailboxes."""
    zones = list(scoping.scope_queryset(Zone.objects.all(), user).order_by("name")[:200])
    nodes = list(
        Node.objects.filter(zone__in=zones).exclude(
            status__in=[NodeStatus.DECOMMISSIONED, NodeStatus.PENDING]
        )
    )
    counts, unplaced = users_by_zone(user)
    measured = measured_p95([n.pk for n in nodes])
    return compute(zones, nodes, counts, measured), unplaced
