"""One sync pass of a domain: a new ``ums-sync-*`` snapshot on the primary, sent to each
replica (full the first time, then incremental), the rows recording what each replica
completely holds, and the primary's sync snapshots no replica needs any more pruned.

Safe to run again at any point: a cut stream is discarded by ``zfs receive`` and the next
pass starts from the last snapshot both sides share. Rows are written only while the
domain's fencing epoch is the one the pass started under, so a pass that raced a failover
records nothing. A fenced replica (a former primary) is resynced only once its node has
converged (fenced: read-only, unmounted, no longer in its Courier configuration); its
diverged dataset is first set aside under ``<pool>/ums-fenced/`` and kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from backup import snapshot_run
from deploy import dirty
from deploy.models import DomainPlacement
from deploy.nodes import session
from mail.models import Domain

from . import zfs
from .models import DomainEpoch, DomainReplica

Say = Callable[..., None]


def current_epoch(domain_id: int) -> int:
    row = DomainEpoch.objects.filter(domain_id=domain_id).first()
    return row.epoch if row else 0


def dataset_for(domain: Domain) -> str:
    return snapshot_run.dataset_of(snapshot_run.layout(settings.UMS_CONVERGE), domain)


def pool() -> str:
    return snapshot_run.layout(settings.UMS_CONVERGE).split("/", 1)[0]


def sync_domain(
    domain: Domain,
    say: Say,
    *,
    only: list[int] | None = None,
    progress: Callable[..., None] = lambda done, total=None: None,
) -> dict[str, Any]:
    """Sync every replica of ``domain`` (or the replica nodes ``only``); a summary.
    Errors of one replica do not stop the others; they are listed under ``errors``."""
    placement = DomainPlacement.objects.select_related("node").filter(domain=domain).first()
    if placement is None:
        return {"replicas": [], "errors": [], "snapshot": None}
    epoch = current_epoch(domain.pk)
    replicas = list(
        DomainReplica.objects.filter(domain=domain).select_related("node").order_by("node_id")
    )
    if only is not None:
        replicas = [r for r in replicas if r.node_id in only]
    summary: dict[str, Any] = {"replicas": [], "errors": [], "snapshot": None}
    if not replicas:
        return summary
    dataset = dataset_for(domain)
    now = timezone.now()
    with session(placement.node) as primary:
        newest = zfs.take_sync_snapshot(primary, dataset, now)
        # The lag counts from when the pass took its snapshot (not the name's second,
        # which runs ahead when passes follow each other within a second).
        taken_at = now
        summary["snapshot"] = newest
        say(gettext_noop("took %(snapshot)s on %(node)s"), snapshot=newest, node=primary.host)
        progress(0, len(replicas))
        for index, replica in enumerate(replicas, 1):
            try:
                done = _sync_one(primary, replica, dataset, newest, epoch, say)
            except Exception as exc:  # one replica's failure leaves the others going
                message = str(exc)[:1000]
                DomainReplica.objects.filter(pk=replica.pk).update(last_error=message)
                say(
                    gettext_noop("sync of %(domain)s to %(node)s failed: %(error)s"),
                    domain=domain.name,
                    node=replica.node.hostname,
                    error=message,
                )
                summary["errors"].append(f"{replica.node.hostname}: {message}")
                progress(index)
                continue
            if done is not None:
                _record(replica, newest, taken_at, done["bytes"], epoch)
                summary["replicas"].append({"node": replica.node.hostname, **done})
            progress(index)
        needed = set(
            DomainReplica.objects.filter(domain=domain).values_list("last_snapshot", flat=True)
        ) | {newest}
        summary["pruned"] = zfs.prune_sync(primary, dataset, needed)
    return summary


def _sync_one(
    primary: Any, replica: DomainReplica, dataset: str, newest: str, epoch: int, say: Say
) -> dict[str, Any] | None:
    domain = replica.domain
    if replica.state == DomainReplica.FENCED and dirty.is_dirty(replica.node_id):
        say(
            gettext_noop("%(node)s is not fenced yet (waiting for its converge)"),
            node=replica.node.hostname,
        )
        return None
    with session(replica.node) as conn:
        if replica.state == DomainReplica.FENCED:
            aside = zfs.set_aside(conn, dataset, pool(), domain.name, replica.fenced_epoch or 0)
            if aside:
                say(
                    gettext_noop("kept the diverged copy of %(domain)s on %(node)s as %(aside)s"),
                    domain=domain.name,
                    node=replica.node.hostname,
                    aside=aside,
                )
        result = zfs.send_to_replica(primary, conn, dataset, newest)
    say(
        gettext_noop("%(domain)s on %(node)s now holds %(snapshot)s (%(bytes)s bytes sent)"),
        domain=domain.name,
        node=replica.node.hostname,
        snapshot=newest,
        bytes=result["bytes"],
    )
    return result


def _record(replica: DomainReplica, newest: str, taken_at: Any, sent: int, epoch: int) -> None:
    with transaction.atomic():
        if current_epoch(replica.domain_id) != epoch:
            return  # a failover happened meanwhile: this pass's facts are stale
        DomainReplica.objects.filter(pk=replica.pk).update(
            state=DomainReplica.SYNCED,
            fenced_epoch=None,
            last_snapshot=newest,
            synced_at=taken_at,
            bytes_sent=sent,
            last_error="",
        )
