"""State changes of backups: targets, snapshot policies, on-demand snapshots and tests.

Every function takes ``actor=``, runs in one transaction and writes its audit record there;
node and target work is a job started after commit. Backups use the servers permissions
(``servers.view`` to see, ``servers.manage`` to change): backups are infrastructure.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from mail.models import Domain
from tenants import permissions as perms
from tenants.models import Customer
from ums import auditing, jobs
from ums.actions import action, recheck_in_scope, require_in_scope, require_permission
from ums.models import Job

from .choices import POLICY_FIELDS
from .models import KIND_REQUIRED, BackupTarget, SnapshotPolicy

SECRET_FIELDS = frozenset({"s3_secret_key", "cifs_password"})
#: Fields an administrator may set on a target: the audited ones but the kind (fixed at
#: creation), and the secrets (write-only, never audited).
TARGET_FIELDS = (frozenset(BackupTarget.audit_fields) - {"kind"}) | SECRET_FIELDS
TEST_JOB = "backup.test_target"
SNAPSHOT_JOB = "backup.snapshot_node"


def _check_fields(changes: dict[str, Any]) -> None:
    unknown = set(changes) - TARGET_FIELDS
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})


def _validate(target: BackupTarget) -> None:
    """Field checks and the kind's required fields, every error at once."""
    errors: dict[str, list] = {}
    try:
        target.full_clean(exclude=["customer_path"], validate_constraints=False)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    duplicate = BackupTarget.objects.filter(customer=target.customer, name=target.name)
    if target.pk:
        duplicate = duplicate.exclude(pk=target.pk)
    if target.name and duplicate.exists():
        errors.setdefault("name", []).append(_("A backup target with this name already exists."))
    if errors:
        raise ValidationError(errors)


def _changed_secrets(before: BackupTarget | None, after: BackupTarget) -> list[str]:
    return sorted(
        f
        for f in SECRET_FIELDS
        if getattr(after, f) and (before is None or getattr(before, f) != getattr(after, f))
    )


@action
def create_target(
    *, actor: Any, customer: Customer, name: str, kind: str, **fields: Any
) -> BackupTarget:
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(customer, actor)
    _check_fields(fields)
    target = BackupTarget(customer=customer, customer_path=customer.path, name=name, kind=kind)
    for key, value in fields.items():
        setattr(target, key, value)
    _validate(target)
    target.save()
    after = auditing.snapshot(target)
    after["secrets_set"] = _changed_secrets(None, target)
    auditing.record("backup_target.create", obj=target, after=after)
    recheck_in_scope(target, actor)
    return target


@action
def update_target(*, actor: Any, target: BackupTarget, **changes: Any) -> BackupTarget:
    """Change a target; a blank secret keeps the stored one (secrets are never shown)."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(target, actor)
    _check_fields(changes)
    target = BackupTarget.objects.select_for_update().get(pk=target.pk)
    old = BackupTarget.objects.get(pk=target.pk)
    before = auditing.snapshot(target)
    for key, value in changes.items():
        if key in SECRET_FIELDS and not value:
            continue
        setattr(target, key, value)
    _validate(target)
    target.save()
    changed_before, changed_after = auditing.diff(before, auditing.snapshot(target))
    secrets = _changed_secrets(old, target)
    if secrets:
        changed_after["secrets_changed"] = secrets
    if changed_after:
        auditing.record(
            "backup_target.update", obj=target, before=changed_before, after=changed_after
        )
    return target


@action
def delete_target(*, actor: Any, target: BackupTarget) -> None:
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(target, actor)
    snapshot = auditing.snapshot(target)
    pk, name, customer = target.pk, target.name, target.customer
    target.delete()
    auditing.record(
        "backup_target.delete",
        object_type="backup.backuptarget",
        object_id=pk,
        object_repr=name,
        customer=customer,
        before=snapshot,
    )


@action
def start_target_test(*, actor: Any, target: BackupTarget) -> Job:
    """ "Test connection": a job writes, reads back and deletes an encrypted probe."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(target, actor)
    missing = [f for f in KIND_REQUIRED.get(target.kind, ()) if not getattr(target, f)]
    if missing:
        raise ValidationError({f: _("Required for this kind of target.") for f in missing})
    job = jobs.enqueue(
        TEST_JOB,
        actor=actor,
        title=_("Test backup target %(name)s") % {"name": target.name},
        customer=target.customer,
        target=target,
        params={"target_id": target.pk},
    )
    auditing.record("backup_target.test", obj=target, extra={"job": job.pk})
    return job


def record_test_result(target_id: int, ok: bool, message: str) -> None:
    """What the last test found (the system writes it; not an administrator's change)."""
    from django.utils import timezone

    BackupTarget.objects.filter(pk=target_id).update(
        last_test_at=timezone.now(), last_test_ok=ok, last_test_message=message[:1000]
    )


# ------------------------------------------------------------------------- policies


@action
def set_snapshot_policy(*, actor: Any, customer: Customer, **values: Any) -> SnapshotPolicy:
    """Set (``None``: inherit) a customer's snapshot policy fields."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(customer, actor)
    allowed = {"enabled", *POLICY_FIELDS}
    unknown = set(values) - allowed
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})
    policy, _created = SnapshotPolicy.objects.select_for_update().get_or_create(
        customer=customer, defaults={"customer_path": customer.path}
    )
    before = auditing.snapshot(policy)
    for key, value in values.items():
        setattr(policy, key, value)
    policy.full_clean(exclude=["customer", "customer_path"])
    policy.save()
    old, new = auditing.diff(before, auditing.snapshot(policy))
    if new or _created:
        auditing.record("snapshot_policy.update", obj=policy, before=old, after=new)
    return policy


# ------------------------------------------------------------------------ snapshots


@action
def snapshot_domain_now(*, actor: Any, domain: Domain) -> Job:
    """ "Snapshot now": a job takes an on-demand snapshot of the domain's dataset."""
    from deploy.models import DomainPlacement

    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(domain, actor)
    from .exclusion_policy import describe

    if source := describe(domain)["domain"]:
        # Refused rather than taken: "excluded" must mean no snapshot of it exists that
        # the system made after the exclusion (see README, Backups).
        raise ValidationError(
            {
                "domain": _(
                    "This domain is excluded from backups (set on %(name)s): "
                    "no snapshot is taken. Lift the exclusion first."
                )
                % {"name": source["name"]}
            }
        )
    placement = DomainPlacement.objects.filter(domain=domain).select_related("node").first()
    if placement is None:
        raise ValidationError(
            {"domain": _("This domain is not placed on an IMAP node yet: nothing to snapshot.")}
        )
    job = jobs.enqueue(
        SNAPSHOT_JOB,
        actor=actor,
        title=_("Snapshot of %(domain)s") % {"domain": domain.name},
        customer=domain.customer,
        target=domain,
        params={"node_id": placement.node_id, "domain_ids": [domain.pk], "manual": True},
    )
    auditing.record("snapshot.request", obj=domain, extra={"job": job.pk})
    return job
