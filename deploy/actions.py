"""Node actions started from the servers pages and the API; each one runs as a job."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from servers.actions import validate_service_name
from servers.choices import NodeStatus
from servers.models import Node
from tenants import permissions as perms
from ums import auditing, jobs
from ums.actions import action, require_in_scope, require_permission
from ums.models import Job

NODE_ACTIONS = {
    "reboot": gettext_lazy("Reboot"),
    "shutdown": gettext_lazy("Shut down"),
    "start_services": gettext_lazy("Start all services"),
    "restart_service": gettext_lazy("Restart a service"),
    "storage_start": gettext_lazy("Start the mail storage"),
    "storage_stop": gettext_lazy("Stop the mail storage"),
    "rotate_key": gettext_lazy("Rotate the controller key"),
    "decommission": gettext_lazy("Decommission"),
    # Office nodes only; handled by office.jobs (discovery, capabilities, export to PDF).
    "office_check": gettext_lazy("Office check (PDF export)"),
    # Handled by deploy.jobs.converge_node (see deploy/converge.py).
    "converge": gettext_lazy("Converge"),
    "converge_dry_run": gettext_lazy("Show changes (dry run)"),
}

#: Node actions that only make sense on nodes with a role.
ROLE_ACTIONS = {"office_check": "office"}


def actions_for(node: Node) -> dict[str, Any]:
    """The node actions offered for ``node`` (role-bound ones only on nodes with the role)."""
    roles = set(node.roles or ())
    return {
        name: label
        for name, label in NODE_ACTIONS.items()
        if name not in ROLE_ACTIONS or ROLE_ACTIONS[name] in roles
    }


@action
def start_node_action(*, actor: Any, node: Node, name: str, service: str | None = None) -> Job:
    """Audit the request and queue the job; the job itself does the SSH work."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(node, actor)
    if name not in NODE_ACTIONS:
        raise ValidationError({"action": _("Unknown node action.")})
    if node.status in (NodeStatus.PENDING, NodeStatus.DECOMMISSIONED):
        raise ValidationError({"action": _("This node is not enrolled and approved.")})
    if name in ROLE_ACTIONS and ROLE_ACTIONS[name] not in (node.roles or ()):
        raise ValidationError({"action": _("This action is not available for this node.")})
    params: dict[str, Any] = {"node_id": node.pk}
    if name in ("storage_start", "storage_stop"):
        _request_storage(node, name)
    if name == "restart_service":
        params["service"] = validate_service_name(service or "")
    auditing.record("node.action", obj=node, extra={"action": name, **params})
    title = f"{NODE_ACTIONS[name]}: {node.hostname}"
    if service:
        title += f" ({service})"
    return jobs.enqueue(
        f"node.{name}",
        actor=actor,
        title=title,
        customer_path=node.customer_path,
        params=params,
        target=node,
    )


#: Jobs that read or write a node's mail store: storage stop waits until none is active.
#: (They hold no lease of their own; the converge lease storage jobs take is separate.)
MAIL_STORE_JOB_PREFIXES = ("backup.", "replication.")


def _request_storage(node: Node, name: str) -> None:
    """Record the requested storage state (the reconciler re-drives it until it holds)."""
    wanted = "stopped" if name == "storage_stop" else "running"
    if wanted == "stopped":
        on_node = (
            Q(params__node_id=node.pk)
            | Q(params__new_node_id=node.pk)
            | Q(params__from_node_id=node.pk)
            | Q(object_type="servers.node", object_id=str(node.pk))
        )
        busy = Job.objects.filter(on_node, status__in=(Job.PENDING, Job.RUNNING)).filter(
            Q(kind__startswith=MAIL_STORE_JOB_PREFIXES[0])
            | Q(kind__startswith=MAIL_STORE_JOB_PREFIXES[1])
        )
        if busy.exists():
            raise ValidationError(
                {
                    "action": _(
                        "A backup, restore or replication job is using this node's mail "
                        "store; stop the storage when it has finished."
                    )
                }
            )
    Node.objects.filter(pk=node.pk).update(storage_requested=wanted)


def schedule_verification(node_id: int) -> Job:
    """Queued by the system after approval (see receivers)."""
    node = Node.objects.get(pk=node_id)
    return jobs.enqueue(
        "node.verify",
        actor=None,
        title=f"Verify {node.hostname}",
        customer_path=node.customer_path,
        params={"node_id": node.pk},
        target=node,
    )
