"""The parameters of a usage report (API and portal alike), checked in one place."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _

from tenants.models import Customer
from ums import scoping

from . import report


@dataclass(frozen=True)
class ReportParams:
    customer: Customer
    start: datetime.date
    end: datetime.date
    group: str


def _date(value: str, name: str, errors: dict[str, str]) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        errors[name] = _("Enter a date as YYYY-MM-DD.")
        return None


def parse(query: Any, user: Any) -> ReportParams:
    """From ``?customer=&from=&to=&group=``: defaults are the user's home customer, this
    month so far, by child. Every field error at once (``ValidationError`` with a dict);
    a customer outside the user's scope is ``Http404``."""
    errors: dict[str, str] = {}
    today = timezone.now().date()
    start = _date(query.get("from") or today.replace(day=1).isoformat(), "from", errors)
    end = _date(query.get("to") or today.isoformat(), "to", errors)
    group = query.get("group") or report.CHILD
    if group not in report.GROUPS:
        errors["group"] = _("Choose child or day.")
    if start and end:
        if end < start:
            errors["to"] = _("The end must not be before the start.")
        elif (end - start).days > report.MAX_DAYS:
            errors["to"] = _("A report covers at most three years.")
    raw = query.get("customer") or str(user.customer_id)
    customer = None
    if not raw.isdigit():
        errors["customer"] = _("Enter a customer id.")
    if errors:
        raise ValidationError(errors)
    customer = scoping.get_in_scope_or_404(Customer.objects.all(), user, pk=int(raw))
    return ReportParams(customer, start, end, group)
