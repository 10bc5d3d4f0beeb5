"""State changes of off-node copies: a node's copy setting, "copy now", and "restore onto
a new node". Servers permissions, scoped by the node; audited; node work is a job."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from servers.choices import REACHABLE_STATUSES
from servers.models import Node
from tenants import permissions as perms
from ums import auditing, jobs, scoping
from ums.actions import action, recheck_in_scope, require_in_scope, require_permission
from ums.models import Job

from . import offnode_zfs as oz
from .models import BackupTarget
from .models_offnode import OffnodeCopy, OffnodeSetting

COPY_JOB = "backup.offnode_copy"
REBUILD_JOB = "backup.rebuild_node"
SETTING_FIELDS = frozenset(OffnodeSetting.audit_fields)


def _validate(setting: OffnodeSetting, actor: Any) -> None:
    """Every error at once: field ranges, roles of the nodes, the dataset name."""
    errors: dict[str, list[str]] = {}
    try:
        setting.full_clean(exclude=["node", "customer_path"], validate_unique=False)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if "imap" not in (setting.node.roles or []):
        errors.setdefault("node", []).append(_("Off-node copies are set on IMAP nodes."))
    backup = setting.backup_node
    if backup is not None:
        if actor is not None and not scoping.in_scope(backup, actor):
            errors.setdefault("backup_node", []).append(_("Select a valid choice."))
        elif "backup" not in (backup.roles or []):
            errors.setdefault("backup_node", []).append(_("This node has no backup role."))
        elif backup.pk == setting.node_id:
            errors.setdefault("backup_node", []).append(_("A node cannot hold its own copies."))
        try:
            oz.check_dataset(setting.backup_dataset)
            if "/" not in setting.backup_dataset:
                raise oz.OffnodeError("no pool")
        except oz.OffnodeError:
            errors.setdefault("backup_dataset", []).append(
                _("A dataset inside the backup node's pool, such as backup/ums-copies.")
            )
    if (
        setting.target is not None
        and actor is not None
        and not scoping.in_scope(setting.target, actor)
    ):
        errors.setdefault("target", []).append(_("Select a valid choice."))
    if errors:
        raise ValidationError(errors)


@action
def set_offnode_setting(*, actor: Any, node: Node, **values: Any) -> OffnodeSetting:
    """Create or change where ``node``'s mail store is copied."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(node, actor)
    unknown = set(values) - SETTING_FIELDS
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})
    setting, created = OffnodeSetting.objects.select_for_update().get_or_create(
        node=node, defaults={"customer_path": node.customer_path}
    )
    before = auditing.snapshot(setting)
    for key, value in values.items():
        setattr(setting, key, value)
    if isinstance(setting.backup_dataset, str):
        setting.backup_dataset = setting.backup_dataset.strip().strip("/")
    _validate(setting, actor)
    setting.save()
    old, new = auditing.diff(before, auditing.snapshot(setting))
    if new or created:
        auditing.record("offnode_setting.update", obj=setting, before=old, after=new)
    recheck_in_scope(setting, actor)
    return setting


def enqueue_copy(setting: OffnodeSetting, actor: Any = None) -> Job:
    return jobs.enqueue(
        COPY_JOB,
        actor=actor,
        title=_("Off-node copy of %(node)s") % {"node": setting.node.hostname},
        customer_path=setting.node.customer_path,
        target=setting.node,
        params={"node_id": setting.node_id},
    )


@action
def start_offnode_copy(*, actor: Any, node: Node) -> Job:
    """ "Copy now": one off-node copy pass of the node."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(node, actor)
    setting = OffnodeSetting.objects.filter(node=node).first()
    if setting is None or not (setting.backup_node_id or setting.target_id):
        raise ValidationError(
            {"node": _("Choose a backup node or a target for this node's copies first.")}
        )
    # One pass at a time per node: two receives into one dataset would only fail.
    job = Job.objects.filter(
        kind=COPY_JOB,
        object_type="servers.node",
        object_id=str(node.pk),
        status__in=(Job.PENDING, Job.RUNNING),
    ).first() or enqueue_copy(setting, actor)
    auditing.record("offnode_copy.request", obj=node, extra={"job": job.pk})
    return job


@action
def start_rebuild(
    *, actor: Any, node: Node, new_node: Node, prefer: str = "", domains: Any = None
) -> Job:
    """ "Restore onto a new node": the lost ``node``'s domains (all, or ``domains``)
    received onto ``new_node`` from their copies, placed there and converged."""
    from deploy.models import DomainPlacement

    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(node, actor)
    errors: dict[str, list[str]] = {}
    if actor is not None and not scoping.in_scope(new_node, actor):
        errors["new_node"] = [_("Select a valid choice.")]
    elif new_node.pk == node.pk:
        errors["new_node"] = [_("Choose another node than the lost one.")]
    elif "imap" not in (new_node.roles or []) or new_node.status not in REACHABLE_STATUSES:
        errors["new_node"] = [_("The new node must be an approved IMAP node.")]
    if prefer not in ("", OffnodeCopy.NODE, OffnodeCopy.TARGET, OffnodeCopy.ARCHIVE):
        errors["prefer"] = [_("Select a valid choice.")]
    placed = DomainPlacement.objects.filter(node=node).select_related("domain")
    if domains is not None:
        placed = placed.filter(domain__in=list(domains))
    names = sorted(p.domain.name for p in placed)
    if not names:
        errors.setdefault("node", []).append(_("No domain of this node to restore."))
    # Any kind rebuilds: streams as they were, a Maildir archive into a new dataset.
    copied = set(
        OffnodeCopy.objects.filter(domain_name__in=names).values_list("domain_name", flat=True)
    )
    missing = [n for n in names if n not in copied]
    if missing:
        errors.setdefault("node", []).append(
            _("No off-node copy of: %(domains)s.") % {"domains": ", ".join(missing)}
        )
    if errors:
        raise ValidationError(errors)
    job = jobs.enqueue(
        REBUILD_JOB,
        actor=actor,
        title=_("Restore %(node)s onto %(new)s")
        % {"node": node.hostname, "new": new_node.hostname},
        customer_path=node.customer_path,
        target=new_node,
        params={
            "node_id": node.pk,
            "new_node_id": new_node.pk,
            "domain_ids": [p.domain_id for p in placed],
            "prefer": prefer,
        },
    )
    auditing.record(
        "node.rebuild",
        obj=node,
        extra={"job": job.pk, "new_node": new_node.hostname, "domains": names},
    )
    return job


def target_choices(actor: Any) -> Any:
    return scoping.scope_queryset(BackupTarget.objects.all(), actor)


def backup_node_choices(actor: Any) -> Any:
    return scoping.scope_queryset(Node.objects.filter(roles__contains=["backup"]), actor)
