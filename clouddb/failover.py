"""Failover of a zone's cloud database as a job (``clouddb.failover``), on the concepts of
:mod:`replication.failover`: the primary must be offline (or ``force``), the commit point
is one transaction that bumps the zone's epoch, makes the replica the primary and
records the former primary FENCED under the new epoch (audited). Then, each step safe to
repeat: the replica applies what it already received (``MASTER_GTID_WAIT`` on its IO
position), stops replicating and takes writes (``STOP SLAVE``, ``RESET SLAVE ALL``,
``read_only`` off), and Nextcloud's ``dbhost`` on the zone's cloud files nodes points at
it. The former primary is fenced (read-only, data set aside, re-seeded) by the reconciler
whenever it answers again. A job run again after a dead worker finds the switch made
(epoch and primary say so) and carries on from there.

Loss window: replication is asynchronous, so transactions the old primary committed
and the replica had not received when the primary died are not on the new primary
(they stay in the set-aside dump of the old one): at most the lag at failover.
"""

from __future__ import annotations

import time

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from deploy.nodes import session
from replication.failover import is_offline
from servers.models import Node
from ums import auditing, jobs
from ums.models import Job

from . import lease, mariadb, nextcloud
from .models import CloudDbCluster, CloudDbMember
from .reconcile import FAILOVER_JOB, address, server_id


def switch(cluster: CloudDbCluster, new: Node, old: Node, *, epoch: int) -> int:
    """The commit point (idempotent under ``epoch``); the new epoch."""
    with transaction.atomic():
        row = CloudDbCluster.objects.select_for_update().get(pk=cluster.pk)
        if row.epoch == epoch + 1 and row.primary_id == new.pk:
            return row.epoch
        if row.epoch != epoch or row.primary_id != old.pk:
            raise jobs.PermanentJobError("The primary changed since this job was requested.")
        row.epoch += 1
        row.primary = new
        row.changed_at = timezone.now()
        row.save(update_fields=["epoch", "primary", "changed_at"])
        CloudDbMember.objects.filter(cluster=row, node=new).update(
            state=CloudDbMember.PRIMARY, fenced_epoch=None, lag_alerted=False
        )
        CloudDbMember.objects.filter(cluster=row, node=old).update(
            state=CloudDbMember.FENCED, fenced_epoch=row.epoch, replicating=False
        )
        auditing.record(
            "clouddb.failover",
            obj=row,
            actor=None,
            before={"primary": old.hostname},
            after={"primary": new.hostname, "epoch": row.epoch},
        )
    return row.epoch


def _hold(cluster_id: int) -> int:
    """The zone's lease: a reconciler pass already running finishes first (no new one
    starts while this job runs), so none acts on the old primary after the switch."""
    deadline = time.monotonic() + 2 * lease.seconds()
    while (token := lease.claim(cluster_id)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("a reconciler pass still holds the cloud database")
        time.sleep(0.5)
    return token


@jobs.handler(FAILOVER_JOB)
def failover(job: Job, reporter: jobs.Reporter) -> dict:
    cluster = CloudDbCluster.objects.filter(pk=job.params.get("cluster_id")).first()
    new = Node.objects.filter(pk=job.params.get("node_id")).first()
    old = Node.objects.filter(pk=job.params.get("from_node_id")).first()
    if cluster is None or new is None or old is None:
        raise jobs.PermanentJobError("The cloud database or a node of this job was deleted.")
    token = _hold(cluster.pk)
    try:
        return _failover(job, reporter, cluster, new, old)
    finally:
        lease.release(cluster.pk, token)


def _failover(
    job: Job, reporter: jobs.Reporter, cluster: CloudDbCluster, new: Node, old: Node
) -> dict:
    epoch = int(job.params.get("epoch", 0))
    reporter.progress(0, 4)
    cluster.refresh_from_db()
    if not (cluster.epoch == epoch + 1 and cluster.primary_id == new.pk):
        if not job.params.get("force") and not is_offline(old):
            raise jobs.PermanentJobError(f"{old.hostname} answers: its database is not down.")
        with session(new) as conn:
            status = mariadb.slave_status(conn)
            if status is None:
                raise jobs.PermanentJobError(f"{new.hostname} is not a replica.")
            applied = mariadb.wait_applied(conn, status)
            reporter.say(
                gettext_noop("%(node)s holds the primary's transactions up to %(gtid)s"),
                node=new.hostname,
                gtid=mariadb.slave_pos(conn) if applied else status.gtid_io_pos,
            )
    reporter.progress(1)
    new_epoch = switch(cluster, new, old, epoch=epoch)
    reporter.say(
        gettext_noop("%(node)s is the primary (epoch %(epoch)s); %(old)s fenced"),
        node=new.hostname,
        epoch=new_epoch,
        old=old.hostname,
    )
    reporter.progress(2)
    with session(new) as conn:
        mariadb.promote(conn)
        mariadb.ensure_instance(
            conn, server_id=server_id(new), address=address(new), read_only=False
        )
        position = mariadb.binlog_pos(conn)
    CloudDbMember.objects.filter(cluster=cluster, node=new).update(
        read_only=False, replicating=False, gtid_pos=position, seconds_behind=0,
        transactions_behind=0, measured_at=timezone.now(), last_error="",
    )  # fmt: skip
    reporter.say(gettext_noop("%(node)s takes writes"), node=new.hostname)
    reporter.progress(3)
    pointed = []
    for node in nextcloud.cloudfiles_nodes(cluster.zone_id):
        try:
            nextcloud.point(node, address(new))
            pointed.append(node.hostname)
        except Exception as exc:  # the reconciler re-points it when it answers
            reporter.say(
                gettext_noop("pointing %(node)s at the new primary failed: %(error)s"),
                node=node.hostname,
                error=str(exc)[:300],
            )
    reporter.progress(4)
    # The zone's other replicas follow the new primary by GTID at the next pass.
    return {"primary": new.hostname, "epoch": new_epoch, "dbhost_set_on": pointed}
