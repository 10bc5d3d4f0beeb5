"""Audited actions of cloud files: the policy per customer and revoking external links."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils.translation import gettext as _

from mail.models import Mailbox
from mail.signals import announce
from tenants import permissions as perms
from tenants.limits import ResourceLimit
from tenants.models import Customer
from ums import auditing, jobs
from ums.actions import action, recheck_in_scope, require_in_scope, require_permission
from ums.models import Job

from . import policy, usage
from .models import FilesPolicy

REVOKE_JOB = "files.revoke_links"
SCOPE_MAILBOX = "mailbox"
SCOPE_CUSTOMER = "customer"
SCOPE_EVERYONE = "everyone"
SCOPES = (SCOPE_MAILBOX, SCOPE_CUSTOMER, SCOPE_EVERYONE)
MAX_EXPIRE_DAYS = 3650
MAX_QUOTA_MB = 100 * 1024 * 1024


def clean_policy(changes: dict[str, Any]) -> dict[str, Any]:
    """Known fields with sane values; every problem at once, by field."""
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in policy.FIELDS:
            errors.setdefault(key, []).append(_("Unknown field."))
        elif value is None:
            cleaned[key] = None
        elif key in ("internal_shares", "external_links", "password_required"):
            if not isinstance(value, bool):
                errors.setdefault(key, []).append(_("Must be true, false or empty."))
            else:
                cleaned[key] = value
        else:
            limit = MAX_EXPIRE_DAYS if key == "expire_days" else MAX_QUOTA_MB
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
                errors.setdefault(key, []).append(
                    _("Must be a whole number from 0 to %(max)s.") % {"max": limit}
                )
            else:
                cleaned[key] = value
    if errors:
        raise ValidationError(errors)
    return cleaned


def _cloud_limits(customer: Customer) -> list[tuple[str, int]]:
    """(path, GB) of the cloud files limits a change at ``customer`` can push over: its
    own, its ancestors' and its descendants'; locked, root first, like mail's limits."""
    return list(
        ResourceLimit.objects.select_for_update()
        .filter(max_cloud_gb__isnull=False)
        .filter(
            Q(customer_path__startswith=customer.path)
            | Q(customer_path__in=customer.ancestor_paths)
        )
        .order_by("customer_path")
        .values_list("customer_path", "max_cloud_gb")
    )


def _check_cloud_limits(limits: list[tuple[str, int]], before: dict[str, dict[str, int]]) -> None:
    """Refuse a change that grows a subtree's cloud files beyond its limit."""
    after = usage.usage_provider([p for p, _cap in limits])
    for path, cap in limits:
        now, was = after[path][usage.RESOURCE], before[path][usage.RESOURCE]
        if now > cap * 1024 and now > was:
            raise ValidationError(
                {
                    "quota_mb": _(
                        "The mailboxes with cloud files would need %(used)d MB, over a limit "
                        "of %(cap)d GB of cloud files."
                    )
                    % {"used": now, "cap": cap}
                }
            )


@action
def update_files_policy(*, actor: Any, customer: Customer, **changes: Any) -> FilesPolicy:
    """Set a customer's cloud files policy; ``None`` inherits. Converges its nodes."""
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(customer, actor)
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    cleaned = clean_policy(changes)
    row = FilesPolicy.objects.filter(pk=customer.pk).first() or FilesPolicy(
        customer=customer, customer_path=customer.path
    )
    before = auditing.snapshot(row) if row.updated_at else {}
    limits = _cloud_limits(customer) if "quota_mb" in cleaned else []
    used_before = usage.usage_provider([p for p, _cap in limits])
    for key, value in cleaned.items():
        setattr(row, key, value)
    row.customer_path = customer.path
    row.save()
    _check_cloud_limits(limits, used_before)
    old, new = auditing.diff(before, auditing.snapshot(row))
    if new:
        auditing.record("files.policy.update", obj=row, customer=customer, before=old, after=new)
        announce(customer.path, [], kind="files_policy")
    recheck_in_scope(row, actor)
    return row


@action
def revoke_external_links(
    *,
    actor: Any,
    scope: str,
    customer: Customer | None = None,
    mailbox: Mailbox | None = None,
) -> Job:
    """Queue the job that deletes the external (public and e-mail) links of one mailbox,
    of a customer's subtree, or of everyone the actor administers. Audited here (the
    request) and by the job (how many links it deleted)."""
    require_permission(actor, perms.MAIL_MANAGE)
    if scope == SCOPE_MAILBOX:
        if mailbox is None:
            raise ValidationError({"mailbox": [_("Choose a mailbox.")]})
        require_in_scope(mailbox, actor)
        path, email, target, label = mailbox.customer_path, mailbox.email, mailbox, mailbox.email
        owner = mailbox.customer
    elif scope == SCOPE_CUSTOMER:
        if customer is None:
            raise ValidationError({"customer": [_("Choose a customer.")]})
        require_in_scope(customer, actor)
        path, email, target, label, owner = customer.path, "", customer, customer.name, customer
    elif scope == SCOPE_EVERYONE:
        owner = Customer.objects.filter(path=actor.customer_path).first()
        path, email, target, label = actor.customer_path, "", owner, _("everyone")
    else:
        raise ValidationError({"scope": [_("Choose mailbox, customer or everyone.")]})
    job = jobs.enqueue(
        REVOKE_JOB,
        actor=actor,
        title=_("Revoke external file links of %(who)s") % {"who": label},
        customer=owner,
        customer_path=path,
        params={"scope": scope, "customer_path": path, "email": email},
        target=target,
    )
    auditing.record(
        "files.links.revoke_requested",
        object_type=job._meta.label_lower,
        object_id=job.pk,
        object_repr=job.title,
        customer=owner,
        customer_path=path,
        extra={"scope": scope, "email": email},
    )
    return job
