"""What an IMAP node's converge must know about replication: the domains it holds as
replicas or was fenced from (``replica_domains`` in its desired state's settings).

The ZFS service keeps those datasets read-only and unmounted; the node's Courier and LDA
configuration already leaves them out (only domains placed on the node are rendered).
Both are level-triggered: a former primary that comes back after a failover is fenced by
its next converge, whatever it still believes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from servers.models import Node


def node_overrides(node: Node) -> Mapping[str, Any]:
    if "imap" not in (node.roles or ()):
        return {}
    from .models import DomainReplica

    names = sorted(DomainReplica.objects.filter(node=node).values_list("domain__name", flat=True))
    return {"replica_domains": names} if names else {}
