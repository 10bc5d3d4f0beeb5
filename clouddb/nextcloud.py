"""Nextcloud's ``dbhost`` on the cloud files nodes of a zone: the zone's cloud database
primary. Set by a failover at once and checked by every reconciler pass (a cloud files
node that was down during the failover is re-pointed when it answers)."""

from __future__ import annotations

import json

from deploy.nodes import session
from deploy.services.nextcloud.service import occ_prefix
from servers.choices import REACHABLE_STATUSES
from servers.models import Node


def cloudfiles_nodes(zone_id: int) -> list[Node]:
    nodes = Node.objects.filter(zone_id=zone_id, status__in=REACHABLE_STATUSES).order_by("pk")
    return [n for n in nodes if "cloudfiles" in (n.roles or ())]


def point(node: Node, host: str) -> bool:
    """``dbhost`` of ``node``'s Nextcloud set to ``host``; True when it changed."""
    from deploy.desired import settings_for

    prefix = occ_prefix(settings_for(node))
    with session(node) as conn:
        current = conn.run([*prefix, "config:system:get", "dbhost"], timeout=120)
        value = current.stdout.strip()
        if current.ok and value in (host, json.dumps(host)):
            return False
        conn.run([*prefix, "config:system:set", "dbhost", f"--value={host}"], timeout=120).check()
    return True
