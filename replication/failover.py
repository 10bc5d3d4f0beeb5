"""Failover and failback of a domain as jobs (``replication.failover``,
``replication.failback``).

**Failover** (the primary is offline): the commit point is one transaction that bumps the
domain's fencing epoch, moves its placement to the replica, records the former primary
as a FENCED replica of the new epoch and marks the nodes for converge (the new primary
to serve it, the SMTP nodes to relay to it, the former primary to be fenced whenever it
answers again). Then, each step safe to repeat: the replica's dataset is made writable
and mounted (converge would do the same from the new placement), the nodes converge,
and the SMTP nodes flush their queues: mail they deferred while the primary was down
(Postfix defers on a refused connection; it never bounces for that) is delivered now.
A job run again after a dead worker finds the switch done (epoch and placement say so)
and carries on from there.

**Failback** (on request, the primary is online): one sync while the primary still
serves, then the primary's dataset is set read-only (deliveries there fail temporarily,
so the SMTP nodes defer them), a final incremental sync, and the same switch: nothing
acknowledged is lost. The former primary stays a replica at the final snapshot (not
fenced: it holds exactly what was sent). Should the job stop between the freeze and the
switch, the primary's next converge makes its dataset writable again (it is still the
placement), so mail never stays deferred.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from deploy import dirty
from deploy.models import DomainPlacement
from deploy.nodes import session
from deploy.relay_retry import relaying_smtp_nodes
from deploy.services.zfs import ZfsService
from mail.models import Domain
from servers.models import Node
from ums import auditing, jobs
from ums.models import Job

from . import sync, zfs
from .models import DomainEpoch, DomainReplica

FAILOVER_JOB = "replication.failover"
FAILBACK_JOB = "replication.failback"
SYNC_JOB = "replication.sync"
#: How long a failover waits for the converges it asked for before it flushes queues.
CONVERGE_WAIT = 120.0


def is_offline(node: Node, timeout: float = 5.0) -> bool:
    """True when the node does not answer a command over SSH within ``timeout``."""
    try:
        with session(node, timeout=timeout) as conn:
            return not conn.run(["true"]).ok
    except Exception:
        return True


def mountpoint_for(domain: Domain) -> str | None:
    root = ZfsService._mail_root(getattr(settings, "UMS_CONVERGE", {}))
    return f"{root}/{domain.name}" if root else None


def switch(
    domain: Domain, new: Node, old: Node, *, epoch: int, fenced: bool, snapshot: str = ""
) -> tuple[int, list[int]]:
    """The commit point: placement, epoch and replica rows in one transaction (audited);
    the new epoch and the nodes marked for converge. Idempotent: a switch already made
    under ``epoch`` returns its result again."""
    with transaction.atomic():
        row, _ = DomainEpoch.objects.select_for_update().get_or_create(domain=domain)
        placement = DomainPlacement.objects.select_for_update().get(domain=domain)
        if row.epoch == epoch + 1 and placement.node_id == new.pk:
            return row.epoch, _nodes(domain, new, old)
        if row.epoch != epoch or placement.node_id != old.pk:
            raise jobs.PermanentJobError(
                "The domain's primary changed since this job was requested."
            )
        row.epoch += 1
        row.changed_at = timezone.now()
        row.save()
        placement.node = new
        placement.save(update_fields=["node"])
        DomainReplica.objects.filter(domain=domain, node=new).delete()
        DomainReplica.objects.update_or_create(
            domain=domain,
            node=old,
            defaults={
                "customer_path": domain.customer_path,
                "state": DomainReplica.FENCED if fenced else DomainReplica.SYNCED,
                "fenced_epoch": row.epoch if fenced else None,
                "last_snapshot": snapshot,
                "synced_at": timezone.now() if snapshot else None,
                "last_error": "",
            },
        )
        auditing.record(
            "domain.failover" if fenced else "domain.failback",
            obj=domain,
            actor=None,
            before={"node": old.hostname},
            after={"node": new.hostname, "epoch": row.epoch},
        )
        nodes = _nodes(domain, new, old)
        dirty.bump(nodes, reason=f"{domain.name} now served by {new.hostname}")
        # A failed-over primary is down: it stays dirty (the reconciler converges it, and
        # so fences it, once it answers) rather than holding a worker on retries now.
        queued = [n for n in nodes if not (fenced and n == old.pk)]
        transaction.on_commit(lambda: dirty.ensure_queued(queued, reason="failover"))
    return row.epoch, nodes


def _nodes(domain: Domain, new: Node, old: Node) -> list[int]:
    return sorted({new.pk, old.pk, *dirty.nodes_serving(domain.customer_path)})


def wait_converged(node_ids: list[int], say: Any, timeout: float = CONVERGE_WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while any(dirty.is_dirty(n) for n in node_ids):
        if time.monotonic() > deadline:
            say(gettext_noop("not converged yet; the reconciler carries on"))
            return False
        time.sleep(0.5)
    return True


def flush_smtp(new: Node, say: Any) -> list[str]:
    """``postqueue -f`` on the SMTP nodes relaying to ``new``: deferred mail goes now."""
    flushed = []
    for smtp in relaying_smtp_nodes(new):
        try:
            with session(smtp) as conn:
                conn.run(["postqueue", "-f"]).check()
            flushed.append(smtp.hostname)
        except Exception as exc:  # a later queue run delivers anyway
            say(
                gettext_noop("flushing the queue of %(node)s failed: %(error)s"),
                node=smtp.hostname,
                error=str(exc)[:300],
            )
    return flushed


def _load(job: Job) -> tuple[Domain, Node, Node]:
    domain = Domain.objects.filter(pk=job.params.get("domain_id")).first()
    new = Node.objects.filter(pk=job.params.get("node_id")).first()
    old = Node.objects.filter(pk=job.params.get("from_node_id")).first()
    if domain is None or new is None or old is None:
        raise jobs.PermanentJobError("The domain or a node of this job was deleted.")
    return domain, new, old


def _finish(
    domain: Domain, new: Node, old: Node, nodes: list[int], reporter: jobs.Reporter
) -> dict:
    dataset = sync.dataset_for(domain)
    with session(new) as conn:
        zfs.promote(conn, dataset, mountpoint_for(domain))
    reporter.say(
        gettext_noop("%(domain)s is writable and mounted on %(node)s"),
        domain=domain.name,
        node=new.hostname,
    )
    reporter.progress(3)
    # The former primary is left out: a failed-over one is down (its converge, whenever
    # it answers, fences it); a failed-back one was fenced just above.
    wait_converged([n for n in nodes if n != old.pk], reporter.say)
    reporter.progress(4)
    flushed = flush_smtp(new, reporter.say)
    reporter.say(gettext_noop("flushed the queues of %(nodes)s"), nodes=", ".join(flushed) or "-")
    reporter.progress(5)
    return {"domain": domain.name, "node": new.hostname, "flushed": flushed}


@jobs.handler(FAILOVER_JOB)
def failover(job: Job, reporter: jobs.Reporter) -> dict:
    domain, new, old = _load(job)
    epoch = int(job.params.get("epoch", 0))
    reporter.progress(0, 5)
    row = DomainEpoch.objects.filter(domain=domain).first()
    switched = row is not None and row.epoch == epoch + 1
    if not switched:
        # Before the commit point: the replica must hold the domain, and the primary
        # must really be gone (a live primary is switched by failback, losslessly).
        if not job.params.get("force") and not is_offline(old):
            raise jobs.PermanentJobError(
                f"{old.hostname} answers: use failback to switch a live primary."
            )
        with session(new) as conn:
            snaps = zfs.list_all(conn, sync.dataset_for(domain))
        if not snaps:
            raise jobs.PermanentJobError(f"{new.hostname} holds no replica of {domain.name}.")
        reporter.say(
            gettext_noop("%(node)s holds %(domain)s up to %(snapshot)s"),
            node=new.hostname,
            domain=domain.name,
            snapshot=snaps[-1].name,
        )
    reporter.progress(1)
    new_epoch, nodes = switch(domain, new, old, epoch=epoch, fenced=True)
    reporter.say(
        gettext_noop("%(domain)s placed on %(node)s (epoch %(epoch)s); %(old)s fenced"),
        domain=domain.name,
        node=new.hostname,
        epoch=new_epoch,
        old=old.hostname,
    )
    reporter.progress(2)
    return {**_finish(domain, new, old, nodes, reporter), "epoch": new_epoch}


@jobs.handler(FAILBACK_JOB)
def failback(job: Job, reporter: jobs.Reporter) -> dict:
    domain, new, old = _load(job)
    epoch = int(job.params.get("epoch", 0))
    reporter.progress(0, 5)
    row = DomainEpoch.objects.filter(domain=domain).first()
    if not (row is not None and row.epoch == epoch + 1):
        dataset = sync.dataset_for(domain)
        first = sync.sync_domain(domain, reporter.say, only=[new.pk])
        if first["errors"]:
            raise RuntimeError("; ".join(first["errors"]))
        with session(old) as conn:
            # Deliveries on the primary now fail temporarily (the SMTP nodes defer them).
            result = conn.run(["zfs", "set", "readonly=on", dataset])
            if not result.ok:
                raise RuntimeError(result.stderr[:300])
        reporter.say(gettext_noop("%(node)s frozen read-only"), node=old.hostname)
        final = sync.sync_domain(domain, reporter.say, only=[new.pk])
        if final["errors"]:
            raise RuntimeError("; ".join(final["errors"]))
        reporter.progress(1)
        new_epoch, nodes = switch(
            domain, new, old, epoch=epoch, fenced=False, snapshot=final["snapshot"]
        )
    else:
        new_epoch, nodes = row.epoch, _nodes(domain, new, old)
    with session(old) as conn:
        zfs.fence(conn, sync.dataset_for(domain))
    reporter.say(
        gettext_noop("%(domain)s placed on %(node)s (epoch %(epoch)s); %(old)s is a replica"),
        domain=domain.name,
        node=new.hostname,
        epoch=new_epoch,
        old=old.hostname,
    )
    reporter.progress(2)
    return {**_finish(domain, new, old, nodes, reporter), "epoch": new_epoch}


@jobs.handler(SYNC_JOB)
def sync_job(job: Job, reporter: jobs.Reporter) -> dict:
    domain = Domain.objects.filter(pk=job.params.get("domain_id")).first()
    if domain is None:
        raise jobs.PermanentJobError("The domain was deleted.")
    summary = sync.sync_domain(domain, reporter.say, progress=reporter.progress)
    if summary["errors"]:
        raise RuntimeError("; ".join(summary["errors"])[:2000])
    return summary
