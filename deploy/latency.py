"""Round-trip time between zones, measured with ping from a node of each zone."""

from __future__ import annotations

import ipaddress
import re

from django.utils import timezone

from servers.choices import REACHABLE_STATUSES
from servers.models import Node, Zone, ZoneLatency

from .connector.base import ConnectorError
from .nodes import session

_RTT = re.compile(r"= [\d.]+/([\d.]+)/")


def _representative(zone: Zone) -> Node | None:
    return (
        zone.nodes.filter(status__in=REACHABLE_STATUSES, host_key_alert="")
        .exclude(pinned_host_keys=[])
        .order_by("pk")
        .first()
    )


def ping_rtt_ms(source: Node, target_address: str) -> float | None:
    ipaddress.ip_address(target_address)  # an address only, never a name or an option
    with session(source) as conn:
        result = conn.run(["ping", "-c", "3", "-q", "-W", "2", target_address], timeout=30)
    match = _RTT.search(result.stdout)
    return float(match.group(1)) if result.ok and match else None


def measure() -> int:
    """Measure every ordered pair of zones that have a reachable node; returns pairs stored."""
    zones = [(zone, _representative(zone)) for zone in Zone.objects.all()]
    zones = [(zone, node) for zone, node in zones if node is not None]
    stored = 0
    for from_zone, source in zones:
        for to_zone, target in zones:
            if from_zone.pk == to_zone.pk:
                continue
            try:
                rtt = ping_rtt_ms(source, target.ssh_address)
            except (ConnectorError, ValueError):
                continue
            if rtt is None:
                continue
            ZoneLatency.objects.update_or_create(
                from_zone=from_zone,
                to_zone=to_zone,
                defaults={
                    "rtt_ms": rtt,
                    "measured_at": timezone.now(),
                    "customer_path": from_zone.customer_path,
                },
            )
            stored += 1
    return stored
