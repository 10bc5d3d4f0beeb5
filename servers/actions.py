"""State changes of zones and nodes.

Administrator actions take ``actor=`` and are audited in their transaction. The functions
at the end (``record_*``, ``flag_*``) are called by the controller itself (deploy tasks)
when it learns something about a node; they are audited as the system.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from tenants import permissions as perms
from tenants.models import Customer
from ums import auditing
from ums.actions import action, recheck_in_scope, require_in_scope, require_permission

from .choices import NodeStatus, Role
from .models import MetricSample, Node, NodeAlert, Zone
from .signals import node_approved

# A node that misses this many metric collections in a row is marked offline.
MISSES_BEFORE_OFFLINE = 3
SERVICE_NAME_MAX = 64


# ------------------------------------------------------------------------------ zones


@action
def create_zone(*, actor: Any, customer: Customer, name: str, **fields: Any) -> Zone:
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(customer, actor)
    zone = Zone(customer=customer, customer_path=customer.path, name=name, **fields)
    zone.full_clean(exclude=["customer_path"], validate_constraints=False)
    if Zone.objects.filter(customer=customer, name__iexact=name).exists():
        raise ValidationError({"name": _("A zone with this name already exists.")})
    zone.save()
    auditing.record("zone.create", obj=zone, after=auditing.snapshot(zone))
    recheck_in_scope(zone, actor)
    return zone


@action
def update_zone(*, actor: Any, zone: Zone, **changes: Any) -> Zone:
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(zone, actor)
    allowed = {"name", "location", "site_kind", "redundancy", "notes"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})
    zone = Zone.objects.select_for_update().get(pk=zone.pk)
    before = auditing.snapshot(zone)
    for key, value in changes.items():
        setattr(zone, key, value)
    zone.full_clean(exclude=["customer_path"], validate_constraints=False)
    duplicate = Zone.objects.filter(customer=zone.customer, name__iexact=zone.name)
    if duplicate.exclude(pk=zone.pk).exists():
        raise ValidationError({"name": _("A zone with this name already exists.")})
    zone.save()
    old, new = auditing.diff(before, auditing.snapshot(zone))
    if new:
        auditing.record("zone.update", obj=zone, before=old, after=new)
    return zone


@action
def delete_zone(*, actor: Any, zone: Zone) -> None:
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(zone, actor)
    if zone.nodes.exists() or zone.enrolment_tokens.exists():
        raise ValidationError(
            {"zone": _("Only a zone without nodes or enrolment tokens can be deleted.")}
        )
    snapshot = auditing.snapshot(zone)
    pk, name, customer = zone.pk, zone.name, zone.customer
    zone.delete()
    auditing.record(
        "zone.delete",
        object_type="servers.zone",
        object_id=pk,
        object_repr=name,
        customer=customer,
        before=snapshot,
    )


# ------------------------------------------------------------------------------ nodes


def _validate_roles(roles: list[str]) -> list[str]:
    valid = {choice.value for choice in Role}
    unknown = [r for r in roles if r not in valid]
    if unknown:
        raise ValidationError({"roles": _("Unknown roles: %(r)s.") % {"r": ", ".join(unknown)}})
    return [r.value for r in Role if r.value in set(roles)]


@action
def update_node(*, actor: Any, node: Node, **changes: Any) -> Node:
    """Change a node's roles (personality), zone, SSH port, storage service name or the
    capacity the operator declares for it (disk IOPS, network Mbit/s; None = unknown)."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(node, actor)
    allowed = {"roles", "zone", "ssh_port", "storage_service", *CAPACITY_FIELDS}
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})
    node = Node.objects.select_for_update().get(pk=node.pk)
    if node.status == NodeStatus.DECOMMISSIONED:
        raise ValidationError({"node": _("A decommissioned node cannot be changed.")})
    before = auditing.snapshot(node)
    if "roles" in changes:
        node.roles = _validate_roles(list(changes.pop("roles") or []))
    if "zone" in changes:
        zone = changes.pop("zone")
        require_in_scope(zone, actor)
        node.zone = zone
    if "ssh_port" in changes:
        port = changes.pop("ssh_port")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValidationError({"ssh_port": _("Enter a port between 1 and 65535.")})
        node.ssh_port = port
    if "storage_service" in changes:
        node.storage_service = validate_service_name(changes.pop("storage_service"))
    for field in CAPACITY_FIELDS:
        if field in changes:
            setattr(node, field, _capacity(field, changes.pop(field)))
    node.save()
    old, new = auditing.diff(before, auditing.snapshot(node))
    if new:
        auditing.record("node.update", obj=node, before=old, after=new)
    recheck_in_scope(node, actor)
    return node


CAPACITY_FIELDS = ("disk_iops_capacity", "network_mbit_capacity")
CAPACITY_MAX = 10_000_000


def _capacity(field: str, value: Any) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= CAPACITY_MAX:
        raise ValidationError(
            {
                field: _("Enter a whole number between 1 and %(max)d, or leave it empty.")
                % {"max": CAPACITY_MAX}
            }
        )
    return value


def validate_service_name(name: str) -> str:
    """A systemd/SysV service name: it reaches a command line on the node."""
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9@._-]{0,63}", name):
        raise ValidationError(
            {"service": _("Use a service name of letters, digits and @ . _ - only.")}
        )
    return name


@action
def approve_node(*, actor: Any, node: Node) -> Node:
    """Trust a pending node: pin the host keys it reported and let deploy take over."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(node, actor)
    node = Node.objects.select_for_update().get(pk=node.pk)
    if node.status != NodeStatus.PENDING:
        raise ValidationError({"status": _("Only a pending node can be approved.")})
    if not node.reported_host_keys:
        raise ValidationError({"node": _("The node reported no SSH host key.")})
    node.pinned_host_keys = list(node.reported_host_keys)
    node.status = NodeStatus.APPROVED
    node.approved_at = timezone.now()
    node.host_key_alert = ""
    node.save()
    auditing.record(
        "node.approve",
        obj=node,
        before={"status": NodeStatus.PENDING},
        after={"status": node.status, "pinned_host_keys": node.pinned_host_keys},
    )
    node_id = node.pk
    transaction.on_commit(lambda: node_approved.send(sender=Node, node_id=node_id))
    return node


@action
def accept_new_host_key(*, actor: Any, node: Node, host_key: str) -> Node:
    """After a legitimate reinstall: pin the key the node now presents (checked by a human)."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(node, actor)
    node = Node.objects.select_for_update().get(pk=node.pk)
    before = {"pinned_host_keys": node.pinned_host_keys, "status": node.status}
    node.pinned_host_keys = [host_key]
    node.host_key_alert = ""
    if node.status == NodeStatus.DEGRADED:
        # The mismatch was what degraded it (flag_host_key_mismatch); with the key accepted
        # the node serves again in the status it had before.
        node.status = _status_before_mismatch(node)
    node.save(update_fields=["pinned_host_keys", "host_key_alert", "status"])
    node.alerts.filter(kind="host_key_mismatch", resolved_at__isnull=True).update(
        resolved_at=timezone.now()
    )
    auditing.record(
        "node.host_key_accept",
        obj=node,
        before=before,
        after={"pinned_host_keys": [host_key], "status": node.status},
    )
    return node


def _status_before_mismatch(node: Node) -> str:
    """The status a node had when a host key mismatch degraded it (from its audit record)."""
    from audit.models import AuditRecord

    record = (
        AuditRecord.objects.filter(
            action=f"node.status.{NodeStatus.DEGRADED}",
            object_type=Node._meta.label_lower,
            object_id=str(node.pk),
        )
        .order_by("-seq")
        .first()
    )
    earlier = (record.changes.get("before") or {}).get("status") if record else None
    if earlier in (NodeStatus.ACTIVE, NodeStatus.APPROVED):
        return earlier
    return NodeStatus.ACTIVE if node.controller_key_version is not None else NodeStatus.APPROVED


def set_status(node: Node, status: str, *, reason: str = "") -> None:
    """Change a node's status (system), audited when it actually changes."""
    with transaction.atomic():
        current = Node.objects.select_for_update().get(pk=node.pk)
        if current.status == status:
            return
        Node.objects.filter(pk=node.pk).update(status=status)
        auditing.record(
            f"node.status.{status}",
            obj=current,
            actor=None,
            before={"status": current.status},
            after={"status": status},
            extra={"reason": reason} if reason else None,
        )
    node.status = status


def raise_alert(node: Node, kind: str, message: str) -> NodeAlert:
    alert, _created = NodeAlert.objects.get_or_create(
        node=node,
        kind=kind,
        resolved_at=None,
        defaults={"message": message, "customer_path": node.customer_path},
    )
    return alert


def resolve_alerts(node: Node, kind: str) -> None:
    node.alerts.filter(kind=kind, resolved_at__isnull=True).update(resolved_at=timezone.now())


def flag_host_key_mismatch(node: Node, presented_fingerprint: str) -> None:
    """The node presented a key we did not pin: stop talking to it and tell the admins."""
    message = _(
        "Host key mismatch: %(host)s presented %(fp)s, which is not the pinned key. "
        "Connections are refused until an administrator checks the node."
    ) % {"host": node.hostname, "fp": presented_fingerprint}
    with transaction.atomic():
        Node.objects.filter(pk=node.pk).update(host_key_alert=message)
        node.host_key_alert = message
        raise_alert(node, "host_key_mismatch", message)
        auditing.record(
            "node.host_key_mismatch",
            obj=node,
            actor=None,
            extra={"presented": presented_fingerprint},
        )
    set_status(node, NodeStatus.DEGRADED, reason="host key mismatch")


def record_metrics(node: Node, sample: MetricSample) -> None:
    """A successful collection: store it, mark the node seen, bring it back if offline."""
    sample.node = node
    sample.save()
    Node.objects.filter(pk=node.pk).update(last_seen_at=sample.at, missed_collections=0)
    if node.status == NodeStatus.OFFLINE:
        resolve_alerts(node, "offline")
        set_status(node, NodeStatus.ACTIVE, reason="answering again")


def record_missed_collection(node: Node, error: str) -> None:
    Node.objects.filter(pk=node.pk).update(missed_collections=F("missed_collections") + 1)
    node.refresh_from_db(fields=["missed_collections", "status"])
    if node.missed_collections >= MISSES_BEFORE_OFFLINE and node.status != NodeStatus.OFFLINE:
        raise_alert(
            node,
            "offline",
            _("%(host)s missed %(n)d metric collections: %(error)s")
            % {"host": node.hostname, "n": node.missed_collections, "error": error[:300]},
        )
        set_status(node, NodeStatus.OFFLINE, reason=error[:300])


def record_facts(node: Node, facts: dict[str, Any]) -> None:
    """Facts read from the node itself (OS, CPUs, memory, disks)."""
    allowed = {"os_id", "os_version", "os_pretty_name", "cpus", "memory_mb", "disks", "hostname"}
    Node.objects.filter(pk=node.pk).update(**{k: v for k, v in facts.items() if k in allowed})
