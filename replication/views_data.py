"""What the API and the portal show of a domain's replication (one place computes it)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from deploy.models import DomainPlacement
from mail.models import Domain
from servers.models import Node

from . import policy, zones
from .models import DomainEpoch, DomainReplica


@dataclass
class DomainRow:
    domain: Domain
    primary: Node | None
    epoch: int
    policy: policy.Policy
    replicas: list[dict[str, Any]] = field(default_factory=list)
    replica_nodes: list[Node] = field(default_factory=list)

    @property
    def zones(self) -> dict[str, Any]:
        """Zone mode, MX suggestion and latency warnings (computed when asked)."""
        return zones.advice(self.domain, self.primary, self.replica_nodes)

    @property
    def worst_lag(self) -> float | None:
        lags = [r["lag_seconds"] for r in self.replicas if r["lag_seconds"] is not None]
        return max(lags) if lags else None

    @property
    def over_policy(self) -> bool:
        return any(r["over_policy"] for r in self.replicas)


def replica_dict(replica: DomainReplica, pol: policy.Policy, now: datetime.datetime) -> dict:
    lag = policy.lag_seconds(replica, now)
    return {
        "node": replica.node_id,
        "node_hostname": replica.node.hostname,
        "zone": replica.node.zone.name,
        "state": replica.state,
        "state_label": replica.get_state_display(),
        "last_snapshot": replica.last_snapshot,
        "synced_at": replica.synced_at,
        "lag_seconds": None if lag is None else round(lag, 1),
        "over_policy": lag is not None and lag > pol.max_lag_minutes * 60,
        "bytes_sent": replica.bytes_sent,
        "last_error": replica.last_error,
    }


def domain_rows(domains: list[Domain], now: datetime.datetime) -> list[DomainRow]:
    ids = [d.pk for d in domains]
    table = policy.policies_by_path()
    primaries = {
        p.domain_id: p.node
        for p in DomainPlacement.objects.filter(domain_id__in=ids).select_related("node__zone")
    }
    epochs = dict(DomainEpoch.objects.filter(domain_id__in=ids).values_list("domain_id", "epoch"))
    replicas: dict[int, list[DomainReplica]] = {}
    for replica in DomainReplica.objects.filter(domain_id__in=ids).select_related(
        "node", "node__zone"
    ):
        replicas.setdefault(replica.domain_id, []).append(replica)
    rows = []
    for domain in domains:
        pol = policy.effective(domain.customer_path, table)
        rows.append(
            DomainRow(
                domain=domain,
                primary=primaries.get(domain.pk),
                epoch=epochs.get(domain.pk, 0),
                policy=pol,
                replicas=[replica_dict(r, pol, now) for r in replicas.get(domain.pk, [])],
                replica_nodes=[r.node for r in replicas.get(domain.pk, [])],
            )
        )
    return rows


def domain_row(domain: Domain, now: datetime.datetime) -> DomainRow:
    return domain_rows([domain], now)[0]
