"""Setting resource limits: a child can never be given more than its ancestors have left.

For every ancestor with a limit on a resource, the child's new limit must fit in what that
ancestor has not used outside the child's subtree: ``limit(A) - (usage(A) - usage(child))``.
A limit below what the subtree already uses is refused too. Usage comes from the providers
registered in :mod:`tenants.limits` (mail registers its counters).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.utils.translation import gettext as _

from ums import auditing, scoping
from ums.actions import action, recheck_in_scope, require_in_scope, require_permission

from . import escrow
from . import permissions as perms
from .limits import MAX_LIMIT, RESOURCE_LABELS, RESOURCES, ResourceLimit, subtree_usage
from .models import Customer


def _customer_label(customer: Customer, actor: Any) -> str:
    if actor is None or scoping.in_scope(customer, actor):
        return f"“{customer.name}”"
    return _("a customer above yours")


def _unit(resource: str) -> int:
    """Usage is counted in MB for quota and cloud files, limits are in GB."""
    return 1024 if resource in ("quota_gb", "cloud_gb") else 1


@action
def set_limits(*, actor: Any, customer: Customer, **limits: int | None) -> ResourceLimit:
    """Set (or clear with None) any of max_domains, max_mailboxes, max_aliases, max_quota_gb,
    max_cloud_gb."""
    require_permission(actor, perms.CUSTOMERS_MANAGE)
    require_in_scope(customer, actor)
    allowed = {f"max_{r}" for r in RESOURCES}
    unknown = set(limits) - allowed
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})
    if actor is not None and customer.pk == actor.customer_id and customer.parent_id is not None:
        raise PermissionDenied(_("Your own customer's limits are set by the customer above it."))
    errors: dict[str, str] = {}
    for key, value in limits.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT
        ):
            errors[key] = _("Enter a whole number from 0 to %(max)d, or nothing for unlimited.") % {
                "max": MAX_LIMIT
            }
    if errors:
        raise ValidationError(errors)
    customer = Customer.objects.get(pk=customer.pk)
    # Creates below read the caps without locking the limit rows (escrow): wait for those
    # in flight and hold new ones until this commits.
    escrow.exclude_chain_of(customer.pk)
    chain = list(Customer.objects.filter(path__in=customer.ancestor_paths).order_by("depth"))
    # Lock the limit rows of the chain root first, as every create that refills does.
    locked = {
        row.customer_id: row
        for row in ResourceLimit.objects.select_for_update()
        .filter(customer_id__in=[c.pk for c in chain])
        .order_by("customer_path")
    }
    # Unused escrow of these limits back to the pool: usage alone is then what they cover.
    escrow.reclaim(locked)
    row = locked.get(customer.pk) or ResourceLimit(customer=customer, customer_path=customer.path)
    before = auditing.snapshot(row) if row.pk and customer.pk in locked else {}
    usage = subtree_usage([c.path for c in chain])
    own = usage[customer.path]
    for key, value in limits.items():
        resource = key[4:]
        if value is None:
            continue
        unit = _unit(resource)
        if value * unit < own[resource]:
            errors[key] = _(
                "The subtree already uses %(used)d %(what)s; the limit cannot be lower."
            ) % {"used": -(-own[resource] // unit), "what": RESOURCE_LABELS[resource]}
            continue
        for ancestor in chain[:-1]:
            limit_row = locked.get(ancestor.pk)
            cap = limit_row.limit_of(resource) if limit_row else None
            if cap is None:
                continue
            left = cap * unit - (usage[ancestor.path][resource] - own[resource])
            if value * unit > left:
                errors[key] = _(
                    "At most %(left)d %(what)s are left under the limit of %(cap)d set by "
                    "%(customer)s."
                ) % {
                    "left": max(left // unit, 0),
                    "what": RESOURCE_LABELS[resource],
                    "cap": cap,
                    "customer": _customer_label(ancestor, actor),
                }
                break
    if errors:
        raise ValidationError(errors)
    for key, value in limits.items():
        setattr(row, key, value)
    row.customer_path = customer.path
    row.save()
    old, new = auditing.diff(before, auditing.snapshot(row))
    if new:
        auditing.record("limits.update", obj=row, customer=customer, before=old, after=new)
    recheck_in_scope(row, actor)
    return row
