"""Node actions started from the servers pages and the API; each one runs as a job."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
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
    "storage_start": gettext_lazy("Start the storage volume service"),
    "storage_stop": gettext_lazy("Stop the storage volume service"),
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
