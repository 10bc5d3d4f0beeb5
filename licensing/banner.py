"""The licence banner operators see on every portal page (registered in ``apps.py``).

Warns 30 days before expiry and at 90 % of the limit; says so plainly once the licence
has expired, is exhausted, cannot be verified, or when none is installed. Administrators
of tenants see nothing: the licence is the operator's business.
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from django.utils import formats
from django.utils.translation import gettext as _

from ums.portal.dashboard import Stat
from ums.portal.notices import Notice

from . import actions, state
from .enforce import billable_label


def _concerns(user: Any) -> bool:
    return actions.is_operator(user) and user.has_permission(actions.VIEW_PERMISSION)


def _status(user: Any) -> state.Status:
    """The licence status, read once per request (the banner and the home tile share it)."""
    status = getattr(user, "_licence_status", None)
    if status is None:
        status = state.current()
        user._licence_status = status
    return status


def licence_notices(user: Any) -> list[Notice]:
    return describe(_status(user)) if _concerns(user) else []


def licence_stat(user: Any) -> list[Stat]:
    """The home page tile: use against the limit and days left (operators only)."""
    if not _concerns(user):
        return []
    status = _status(user)
    url = reverse("licensing:licence")
    licence = status.licence
    if licence is None:
        label = (
            _("Licence: none installed")
            if status.state == state.UNLICENSED
            else _("Licence: cannot be verified")
        )
        return [Stat("—", label, url, warn=status.state != state.UNLICENSED)]
    label = _("Licence: %(what)s, %(days)d days left") % {
        "what": licence.model_label,
        "days": status.days_left or 0,
    }
    value = f"{formats.number_format(status.used_display)} / {formats.number_format(licence.limit)}"
    warn = status.state != state.VALID or status.expiring_soon or status.near_limit
    return [Stat(value, label, url, warn=warn)]


def describe(status: state.Status) -> list[Notice]:
    """The notices a licence status calls for (also shown on the licence page)."""
    url, link = reverse("licensing:licence"), _("Licence")
    licence = status.licence
    if status.state == state.UNLICENSED:
        text = _(
            "This installation runs unlicensed (evaluation): nothing is limited. Install the "
            "licence you received to see its terms and use here."
        )
        return [Notice("info", text, url, link)]
    if status.state == state.INVALID or licence is None:
        text = _(
            "The installed licence cannot be verified: %(error)s New mailboxes, customers and "
            "quota increases are refused until a valid licence is installed."
        ) % {"error": status.error}
        return [Notice("error", text, url, link)]
    what = billable_label(licence.model)
    date = formats.date_format(licence.expires)
    found: list[Notice] = []
    if status.state == state.EXPIRED:
        text = _(
            "The licence expired on %(date)s: new %(what)s are refused until a renewed licence "
            "is installed. Everything that exists, and all mail, keeps working."
        ) % {"date": date, "what": what}
        found.append(Notice("error", text, url, link))
    elif status.expiring_soon:
        text = _("The licence expires on %(date)s: %(days)d days left.") % {
            "days": status.days_left or 0,
            "date": date,
        }
        found.append(Notice("warning", text, url, link))
    values = {
        "used": status.used_display,
        "limit": licence.limit,
        "what": licence.model_label,
        "percent": status.percent or 0,
    }
    if status.over_limit:
        text = (
            _(
                "The licence limit is reached: %(used)s of %(limit)s %(what)s in use; new ones are "
                "refused."
            )
            % values
        )
        found.append(Notice("error", text, url, link))
    elif status.near_limit:
        text = _("%(percent)d%% of the licence is in use: %(used)s of %(limit)s %(what)s.") % values
        found.append(Notice("warning", text, url, link))
    return found
