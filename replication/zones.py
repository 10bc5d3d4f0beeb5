"""What a domain's zones mean for it: the primary zone's mode (HOT-HOT or HOT-WARM), the
MX records to publish, and the latency warning between the primary's zone and each
replica's (the product sheet: over 80 ms between zones, warn and say why).

HOT-HOT: SMTP nodes of every zone accept and relay to the current primary (they already
do: an SMTP node serves every domain of its customer tree whatever its zone), so the MX
records suggested have equal priority. HOT-WARM: the other zones hold warm replicas
(:func:`replication.policy.assign` prefers them) and take over on failover; their SMTP
nodes are suggested as lower-priority MX.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _

from deploy.desired import SERVING_STATUSES
from deploy.placement import ancestor_paths
from servers.choices import LATENCY_WARNING_MS, Redundancy
from servers.models import Node, ZoneLatency


def advice(domain: Any, primary: Node | None, replica_nodes: list[Node]) -> dict[str, Any]:
    if primary is None:
        return {"mode": None, "mx": [], "warnings": []}
    mode = primary.zone.redundancy
    smtp = [
        n
        for n in Node.objects.filter(
            status__in=SERVING_STATUSES, customer_path__in=ancestor_paths(domain.customer_path)
        )
        .select_related("zone")
        .order_by("hostname")
        if "smtp" in (n.roles or ())
    ]
    mx = [
        {
            "host": n.hostname,
            "zone": n.zone.name,
            "priority": 10 if mode == Redundancy.HOT_HOT or n.zone_id == primary.zone_id else 20,
        }
        for n in smtp
    ]
    warnings = []
    for node in replica_nodes:
        if node.zone_id == primary.zone_id:
            continue
        rtt = (
            ZoneLatency.objects.filter(from_zone=primary.zone, to_zone=node.zone)
            .values_list("rtt_ms", flat=True)
            .first()
        )
        if rtt is not None and rtt > LATENCY_WARNING_MS:
            warnings.append(
                _(
                    "%(a)s to %(b)s: %(ms).0f ms, over %(limit).0f ms: each sync and every "
                    "mail relayed across the zones waits for it, so the replica in %(b)s "
                    "lags more and a failover there loses more."
                )
                % {"a": primary.zone.name, "b": node.zone.name, "ms": rtt,
                   "limit": LATENCY_WARNING_MS}
            )  # fmt: skip
    return {"mode": mode, "mx": mx, "warnings": warnings}
