"""Re-wire office and cloud files nodes whenever either set changes (level-triggered).

coolwsd.xml on office nodes lists the cloud files nodes (WOPI hosts, ``post_allow``);
Nextcloud on cloud files nodes lists the office nodes (``wopi_allowlist``), and the load
balancers route the office name. Approval, a role change, a new address or a
decommissioned node all change the fingerprint of those nodes: the first pass after that
marks the nodes that render it dirty, whatever path the change took. One small query
when nothing changed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db.models import Q

from deploy import desired, dirty
from servers.models import Node
from ums.reconcile import register

from .models import OfficeWiring

KEY = "office-cloudfiles"
WIRED_ROLES = ("office", "cloudfiles")
#: Nodes whose configuration is rendered from the wiring.
RENDERING_ROLES = ("office", "cloudfiles", "loadbalancer")


def _any_role(roles: tuple[str, ...]) -> Q:
    query = Q()
    for role in roles:
        query |= Q(roles__contains=[role])
    return query


def _digest(wired: list[list[Any]]) -> str:
    return hashlib.sha256(json.dumps(wired).encode()).hexdigest()


def fingerprint() -> str:
    rows = (
        Node.objects.filter(status__in=desired.SERVING_STATUSES)
        .filter(_any_role(WIRED_ROLES))
        .order_by("pk")
        .values_list("pk", "hostname", "addresses", "ssh_address", "roles", "customer_path")
    )
    wired = [
        [pk, host, desired.mail_address(addrs, ssh), sorted(set(roles) & set(WIRED_ROLES)), path]
        for pk, host, addrs, ssh, roles, path in rows
    ]
    return _digest(wired)


#: The fingerprint of no wired nodes at all.
EMPTY = _digest([])


@register("office-wiring")
def rewire_office_nodes() -> dict[str, Any]:
    """Two queries when nothing changed: the wired nodes, and the last fingerprint."""
    if not dirty.enabled():
        return {}
    now = fingerprint()
    row = OfficeWiring.objects.filter(pk=KEY).first()
    # No row yet counts as "no wired nodes": a fresh installation writes nothing.
    if (row.fingerprint if row is not None else EMPTY) == now:
        return {}
    if row is None:
        _row, claimed = OfficeWiring.objects.get_or_create(pk=KEY, defaults={"fingerprint": now})
    else:  # conditional: of two reconcilers seeing the same change, one marks the nodes
        claimed = bool(
            OfficeWiring.objects.filter(pk=KEY, fingerprint=row.fingerprint).update(fingerprint=now)
        )
    if not claimed:
        return {}
    targets = list(
        Node.objects.filter(status__in=dirty.CONVERGE_STATUSES)
        .filter(_any_role(RENDERING_ROLES))
        .values_list("pk", flat=True)
    )
    queued = dirty.mark(targets, reason="office or cloud files nodes changed")
    return {"marked": len(targets), "queued": len(queued)}
