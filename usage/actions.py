"""State changes of usage: who gets a customer's monthly usage report by mail (audited)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from tenants.models import Administrator, Customer
from tenants.permissions import CUSTOMERS_VIEW
from ums import auditing, scoping
from ums.actions import action, require_in_scope, require_permission

from .models import MonthlyReportRecipient


@action
def add_monthly_recipient(
    *, actor: Any, customer: Customer, administrator: Administrator
) -> MonthlyReportRecipient:
    """Mail ``customer``'s usage report each month to ``administrator``, who must see it."""
    require_permission(actor, CUSTOMERS_VIEW)
    require_in_scope(customer, actor)
    require_in_scope(administrator, actor)
    if not (
        administrator.is_active
        and customer.path.startswith(administrator.customer_path)
        and administrator.has_permission(CUSTOMERS_VIEW)
    ):
        raise ValidationError(
            {"administrator": _("This administrator cannot see this customer's usage.")}
        )
    recipient, created = MonthlyReportRecipient.objects.get_or_create(
        customer=customer,
        administrator=administrator,
        defaults={"customer_path": customer.path},
    )
    if created:
        auditing.record(
            "usage.monthly_recipient.add",
            obj=recipient,
            object_repr=f"{customer.name} → {administrator.username}",
            after={"customer": customer.pk, "administrator": administrator.username},
        )
    return recipient


@action
def remove_monthly_recipient(*, actor: Any, recipient: MonthlyReportRecipient) -> None:
    require_permission(actor, CUSTOMERS_VIEW)
    require_in_scope(recipient, actor)
    auditing.record(
        "usage.monthly_recipient.remove",
        obj=recipient,
        object_repr=f"{recipient.customer.name} → {recipient.administrator.username}",
        before={
            "customer": recipient.customer_id,
            "administrator": recipient.administrator.username,
        },
    )
    recipient.delete()


def candidates(actor: Any, customer: Customer) -> list[Administrator]:
    """Administrators ``actor`` may choose: in the actor's scope, able to see ``customer``."""
    admins = scoping.scope_queryset(Administrator.objects.all(), actor).filter(
        is_active=True, customer_path__in=customer.ancestor_paths
    )
    return [a for a in admins.order_by("username") if a.has_permission(CUSTOMERS_VIEW)]
