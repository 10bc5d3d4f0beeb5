"""State changes of the cloud database: failover. Servers permissions, scoped by the
zone's customer; audited; the node work is a job."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from servers.models import Node
from tenants import permissions as perms
from ums import auditing, jobs
from ums.actions import action, require_in_scope, require_permission
from ums.models import Job

from .models import CloudDbCluster, CloudDbMember
from .reconcile import FAILOVER_JOB, failover_running


@action
def start_failover(
    *, actor: Any, cluster: CloudDbCluster, node: Node | None = None, force: bool = False
) -> Job:
    """Promote a replica (``node``, or the one with the newest GTID position) of a zone's
    cloud database whose primary is down. The job refuses while the primary answers,
    unless ``force``."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(cluster, actor)
    replicas = CloudDbMember.objects.filter(cluster=cluster, state=CloudDbMember.REPLICA)
    errors: dict[str, list[str]] = {}
    if node is None:
        best = replicas.select_related("node").order_by("transactions_behind", "node_id")
        member = best.first()
        node = member.node if member else None
        if node is None:
            errors["node"] = [_("This cloud database has no replica.")]
    elif not replicas.filter(node=node).exists():
        errors["node"] = [_("This node is not a replica of this cloud database.")]
    if cluster.primary_id is None:
        errors.setdefault("cluster", []).append(_("This cloud database has no primary."))
    if failover_running(cluster):
        errors.setdefault("cluster", []).append(_("A failover is already running."))
    if errors:
        raise ValidationError(errors)
    job = jobs.enqueue(
        FAILOVER_JOB,
        actor=actor,
        title=_("Fail the cloud database of %(zone)s over to %(node)s")
        % {"zone": cluster.zone.name, "node": node.hostname},
        customer_path=cluster.customer_path,
        target=cluster,
        params={
            "cluster_id": cluster.pk,
            "node_id": node.pk,
            "from_node_id": cluster.primary_id,
            "epoch": cluster.epoch,
            "force": bool(force),
        },
    )
    auditing.record(
        "clouddb.failover_request",
        obj=cluster,
        extra={"job": job.pk, "from": cluster.primary.hostname, "to": node.hostname},
    )
    return job
