"""State changes of exclusion policies (kept apart from :mod:`backup.actions` to keep
that shared module small): set what a customer, a domain or a mailbox leaves out.

Like every action: keyword-only ``actor``, one transaction, scope checked (404 outside),
every field error at once, an audit record (``backup_exclusion.update``) with the values
before and after in the same transaction.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext as _

from mail.models import Domain, Mailbox
from tenants import permissions as perms
from tenants.models import Customer
from ums import auditing
from ums.actions import action, require_in_scope, require_permission

from .exclusion_policy import clean_folders
from .models import BackupExclusion

AUDIT_ACTION = "backup_exclusion.update"


def _target(
    customer: Customer | None, domain: Domain | None, mailbox: Mailbox | None
) -> tuple[str, models.Model]:
    given = [(k, v) for k, v in (("customer", customer), ("domain", domain), ("mailbox", mailbox))]
    given = [(k, v) for k, v in given if v is not None]
    if len(given) != 1:
        raise ValueError("exactly one of customer, domain, mailbox")
    return given[0]


@action
def set_exclusion(
    *,
    actor: Any,
    customer: Customer | None = None,
    domain: Domain | None = None,
    mailbox: Mailbox | None = None,
    excluded: bool | None = None,
    folders: Any = None,
) -> BackupExclusion:
    """Set whether the customer/domain/mailbox is left out of backups (``excluded``) and,
    for customers and domains, the folders left out (``None`` keeps the current value)."""
    require_permission(actor, perms.SERVERS_MANAGE)
    kind, obj = _target(customer, domain, mailbox)
    require_in_scope(obj, actor)
    errors: dict[str, list[str]] = {}
    if excluded is not None and not isinstance(excluded, bool):
        errors["excluded"] = [_("Must be true or false.")]
    clean: list[str] | None = None
    if folders is not None:
        if kind == "mailbox":
            errors["folders"] = [_("Folders are excluded per domain or customer, not per mailbox.")]
        else:
            try:
                clean = clean_folders(folders)
            except ValidationError as exc:
                errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    path = obj.path if kind == "customer" else obj.customer_path
    row, created = BackupExclusion.objects.select_for_update().get_or_create(
        **{kind: obj}, defaults={"customer_path": path}
    )
    before = auditing.snapshot(row)
    if excluded is not None:
        row.excluded = excluded
    if clean is not None:
        row.folders = clean
    row.save()
    old, new = auditing.diff(before, auditing.snapshot(row))
    if new or created:
        auditing.record(
            AUDIT_ACTION,
            obj=row,
            object_repr=str(obj),
            before=old,
            after=new,
            extra={"level": kind, "target": obj.pk},
        )
    return row
