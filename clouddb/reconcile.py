"""The cloud database reconciler (``UMS_CLOUDDB_CHECK_INTERVAL``): level-triggered, one
pass per zone that has cloud DB nodes, holding the zone's lease (:mod:`.lease`).

Each pass reads every member node and acts on the difference from what it should be:

* the primary (the first approved cloud DB node of the zone until a failover says
  otherwise): instance running with its ``server_id``, binlog on, read-write; the
  replication account present with the password the controller keeps encrypted;
* every other member: instance running read-only; replicating from the primary by
  GTID. Without a slave configuration pointing at the primary it is (re-)seeded: its
  slave configuration cleared, its databases replaced by a ``mariadb-dump --gtid
  --master-data`` copy of the primary, then ``CHANGE MASTER ... MASTER_USE_GTID=slave_pos``
  and ``START SLAVE``. A copy cut by a dead worker or a lost connection leaves no slave
  configuration, so the next pass copies again. Replicas of an older primary are
  re-pointed by GTID (no copy);
* a FENCED member (a primary before a failover) is made read-only first, its databases
  dumped aside on the node, then seeded like a new replica;
* the lag: ``Seconds_Behind_Master`` and the GTID positions (transactions behind the
  primary), an alert over the policy's ``max_lag_minutes`` (the customer's replication
  policy) or when replication stopped;
* Nextcloud's ``dbhost`` on the zone's cloud files nodes: the primary.

Facts are written only while the zone's epoch is the one the pass started under.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from deploy.desired import mail_address
from deploy.nodes import session
from replication import policy as repl_policy
from servers import actions as server_actions
from servers.choices import REACHABLE_STATUSES
from servers.models import Node
from ums import auditing
from ums.models import Job

from . import lease, mariadb, nextcloud
from .models import CloudDbCluster, CloudDbMember

LAG_ALERT = "clouddb_lag"
FAILOVER_JOB = "clouddb.failover"


def address(node: Node) -> str:
    return mail_address(node.addresses, node.ssh_address)


def server_id(node: Node) -> int:
    return int(node.pk)


def _clouddb_nodes() -> list[Node]:
    nodes = Node.objects.filter(status__in=REACHABLE_STATUSES).select_related("zone")
    return [n for n in nodes.order_by("pk") if "clouddb" in (n.roles or ())]


def assign() -> list[CloudDbCluster]:
    """A cluster per zone with cloud DB nodes and a member row per node (audited)."""
    by_zone: dict[int, list[Node]] = {}
    for node in _clouddb_nodes():
        by_zone.setdefault(node.zone_id, []).append(node)
    clusters = []
    for zone_id, nodes in by_zone.items():
        with transaction.atomic():
            cluster, _created = CloudDbCluster.objects.select_for_update().get_or_create(
                zone_id=zone_id,
                defaults={
                    "customer_path": nodes[0].zone.customer_path,
                    "repl_password": secrets.token_urlsafe(24),
                },
            )
            if cluster.primary_id is None:
                cluster.primary = nodes[0]
                cluster.save(update_fields=["primary"])
            have = set(cluster.members.values_list("node_id", flat=True))
            for node in nodes:
                if node.pk in have:
                    continue
                CloudDbMember.objects.create(
                    cluster=cluster,
                    node=node,
                    customer_path=node.customer_path,
                    state=CloudDbMember.PRIMARY
                    if node.pk == cluster.primary_id
                    else CloudDbMember.NEW,
                )
                auditing.record(
                    "clouddb.member_added",
                    obj=node,
                    actor=None,
                    after={"zone": str(cluster.zone), "primary": node.pk == cluster.primary_id},
                )
        clusters.append(cluster)
    return clusters


def failover_running(cluster: CloudDbCluster) -> bool:
    return Job.objects.filter(
        kind=FAILOVER_JOB,
        object_type="clouddb.clouddbcluster",
        object_id=str(cluster.pk),
        status__in=(Job.PENDING, Job.RUNNING),
    ).exists()


def run(cluster_ids: list[int] | None = None) -> dict[str, Any]:
    summary: dict[str, Any] = {"clusters": [], "errors": [], "alerts": []}
    for cluster in assign():
        if cluster_ids is not None and cluster.pk not in cluster_ids:
            continue
        if failover_running(cluster):
            continue
        token = lease.claim(cluster.pk)
        if token is None:
            continue
        try:
            errors = reconcile_cluster(cluster.pk, token)
        finally:
            lease.release(cluster.pk, token)
        summary["clusters"].append(cluster.pk)
        summary["errors"] += errors
    summary["alerts"] = lag_alerts()
    return summary


def _record(member: CloudDbMember, epoch: int, **values: Any) -> None:
    with transaction.atomic():
        cluster = CloudDbCluster.objects.select_for_update().get(pk=member.cluster_id)
        if cluster.epoch != epoch:
            return  # a failover happened meanwhile: this pass's facts are stale
        CloudDbMember.objects.filter(pk=member.pk).update(**values)


def reconcile_cluster(cluster_id: int, token: int) -> list[str]:
    cluster = CloudDbCluster.objects.select_related("primary").get(pk=cluster_id)
    epoch, primary = cluster.epoch, cluster.primary
    errors: list[str] = []
    members = list(cluster.members.select_related("node").order_by("node_id"))
    primary_pos = None
    by_node = {m.node_id: m for m in members}
    pm = by_node.get(primary.pk) if primary else None
    if pm is not None:
        try:
            with session(primary) as conn:
                mariadb.ensure_instance(
                    conn, server_id=server_id(primary), address=address(primary), read_only=False
                )
                if mariadb.read_only(conn):
                    mariadb.set_read_only(conn, False)
                mariadb.ensure_repl_user(conn, cluster.repl_password)
                primary_pos = mariadb.binlog_pos(conn)
            _record(pm, epoch, state=CloudDbMember.PRIMARY, gtid_pos=primary_pos,
                    seconds_behind=0, transactions_behind=0, replicating=False, read_only=False,
                    measured_at=timezone.now(), last_error="")  # fmt: skip
        except Exception as exc:  # the primary is down: the replicas keep what they have
            errors.append(f"{primary.hostname}: {exc}")
            _record(pm, epoch, last_error=str(exc)[:1000], measured_at=timezone.now())
    for member in members:
        if primary is None or member.node_id == primary.pk:
            continue
        lease.renew(cluster_id, token)
        try:
            _replica(cluster, member, primary, primary_pos, epoch, token)
        except Exception as exc:  # one node's failure leaves the others going
            errors.append(f"{member.node.hostname}: {exc}")
            _record(member, epoch, last_error=str(exc)[:1000], replicating=False)
    if primary is not None and primary_pos is not None:
        for node in nextcloud.cloudfiles_nodes(cluster.zone_id):
            try:
                if nextcloud.point(node, address(primary)):
                    auditing.record(
                        "clouddb.dbhost_set", obj=node, actor=None,
                        after={"dbhost": address(primary)},
                    )  # fmt: skip
            except Exception as exc:
                errors.append(f"{node.hostname}: dbhost: {exc}")
    return errors


def _replica(
    cluster: CloudDbCluster,
    member: CloudDbMember,
    primary: Node,
    primary_pos: str | None,
    epoch: int,
    token: int,
) -> None:
    node = member.node
    with session(node) as conn:
        mariadb.ensure_instance(conn, server_id=server_id(node), address=address(node),
                                read_only=True)  # fmt: skip
        if not mariadb.read_only(conn):
            mariadb.set_read_only(conn, True)  # fenced now, whatever it believed
        status = mariadb.slave_status(conn)
        if member.state == CloudDbMember.FENCED:
            aside = mariadb.set_aside(conn, member.fenced_epoch or epoch)
            if aside:
                _record(member, epoch, aside=aside)
            status = None  # its data diverged: a full copy, never a re-point
        if status is not None and status.master_host != address(primary):
            if member.state == CloudDbMember.REPLICA and primary_pos is not None:
                mariadb.change_master(conn, address(primary), cluster.repl_password)
                status = mariadb.slave_status(conn)
            else:
                status = None
        if status is None or status.using_gtid != "Slave_Pos":
            if primary_pos is None:
                return  # nothing to copy from while the primary is down
            _record(member, epoch, state=CloudDbMember.SEEDING, last_error="")
            with session(primary) as source:
                done = mariadb.seed(
                    source, conn, address(primary), cluster.repl_password,
                    progress=lambda sent: lease.renew(cluster.pk, token),
                )  # fmt: skip
            _record(member, epoch, state=CloudDbMember.REPLICA, fenced_epoch=None,
                    seeded_at=timezone.now(), seed_bytes=done["bytes"])  # fmt: skip
            auditing.record(
                "clouddb.seeded", obj=node, actor=None,
                after={"primary": primary.hostname, "gtid": done["gtid"], "bytes": done["bytes"]},
            )  # fmt: skip
            status = mariadb.slave_status(conn)
        elif not status.running and not status.last_error:
            mariadb.start_slave(conn)
            status = mariadb.slave_status(conn)
        position = mariadb.slave_pos(conn)
    running = status is not None and status.running
    _record(
        member,
        epoch,
        state=CloudDbMember.REPLICA,
        gtid_pos=position,
        seconds_behind=status.seconds_behind if status else None,
        transactions_behind=mariadb.behind(primary_pos or "", position)
        if primary_pos is not None
        else None,
        replicating=running,
        read_only=True,
        measured_at=timezone.now(),
        last_error=(status.last_error if status else "") if not running else "",
    )


def lag_alerts() -> list[str]:
    """Raise or resolve each replica's lag alert from what the pass measured."""
    raised = []
    table = repl_policy.policies_by_path()
    members = CloudDbMember.objects.select_related("node", "cluster").exclude(
        state=CloudDbMember.PRIMARY
    )
    for member in members:
        limit = repl_policy.effective(member.cluster.customer_path, table).max_lag_minutes * 60
        stopped = member.state == CloudDbMember.REPLICA and not member.replicating
        over = (member.seconds_behind or 0) > limit or stopped
        if over and not member.lag_alerted:
            if stopped:
                message = _("Cloud DB replication on %(node)s is stopped: %(error)s") % {
                    "node": member.node.hostname,
                    "error": member.last_error or "-",
                }
            else:
                message = _(
                    "Cloud DB on %(node)s is %(seconds)d seconds behind its primary "
                    "(limit %(limit)d)."
                ) % {"node": member.node.hostname, "seconds": member.seconds_behind or 0,
                     "limit": limit}  # fmt: skip
            server_actions.raise_alert(member.node, LAG_ALERT, message)
            CloudDbMember.objects.filter(pk=member.pk).update(lag_alerted=True)
            raised.append(member.node.hostname)
        elif not over and member.lag_alerted:
            CloudDbMember.objects.filter(pk=member.pk).update(lag_alerted=False)
            server_actions.resolve_alerts(member.node, LAG_ALERT)
    return raised
