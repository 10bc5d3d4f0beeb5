"""The one licence check every billable create goes through.

``mail.limits.reserve`` (every mailbox create and quota change, the CSV import included)
and ``tenants.actions.create_customer`` call :func:`check` inside their transaction,
before writing. What is billable depends on the licence's model: mailboxes for ``users``,
customers for ``organisations``, mailboxes and quota increases for ``storage_gb``. Only
growth is ever refused: updates that add nothing, disabling, deleting and all mail flow
carry on whatever the licence says (mail never stops because of a licence).

Without any licence installed the product runs unlicensed: nothing is refused and
operators see a banner. Once a licence is installed, an expired, altered or foreign one
refuses billable creates (fail closed) until a valid licence is installed.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.core.exceptions import ValidationError
from django.utils import formats
from django.utils.translation import gettext as _

from . import document, state

FIELD = "licence"


def billable_label(model: str | None) -> str:
    if model == document.USERS:
        return _("mailboxes")
    if model == document.ORGANISATIONS:
        return _("customers")
    if model == document.STORAGE_GB:
        return _("mailboxes or quota increases")
    return _("mailboxes, customers or quota increases")


def _amount(model: str | None, users: int, organisations: int, storage_mb: int) -> int:
    """The growth that counts under ``model`` (for an unreadable licence: any growth)."""
    if model == document.USERS:
        return users
    if model == document.ORGANISATIONS:
        return organisations
    if model == document.STORAGE_GB:
        return storage_mb
    return max(users, organisations, storage_mb)


def refusal(status: state.Status, adding: int, already: int = 0) -> str | None:
    """Why adding ``adding`` (in the model's unit) on top of ``already`` is refused, or None."""
    if adding <= 0 or not status.enforcing:
        return None
    licence = status.licence
    if status.state == state.INVALID or licence is None:
        return _(
            "The installed licence cannot be verified: %(error)s New %(what)s cannot be "
            "created until a valid licence is installed; everything that exists keeps working."
        ) % {"error": status.error, "what": billable_label(None)}
    if status.state == state.EXPIRED:
        return _(
            "The licence expired on %(date)s: new %(what)s cannot be created until a renewed "
            "licence is installed; everything that exists keeps working."
        ) % {"date": formats.date_format(licence.expires), "what": billable_label(licence.model)}
    used = status.used + already
    if used + adding <= status.capacity:
        return None
    if licence.model == document.STORAGE_GB:
        return _(
            "The licence allows %(limit)s GB of mailbox storage; %(used)s GB are allocated and "
            "this needs %(adding)s GB more. Install a larger licence to allocate more."
        ) % {
            "limit": licence.limit,
            "used": round(used / 1024, 1),
            "adding": round(adding / 1024, 2),
        }
    return _(
        "The licence allows %(limit)s %(what)s; %(used)s are in use and this needs %(adding)s "
        "more. Install a larger licence to create more."
    ) % {
        "limit": licence.limit,
        "what": billable_label(licence.model),
        "used": used,
        "adding": adding,
    }


def check(*, users: int = 0, organisations: int = 0, storage_mb: int = 0) -> None:
    """Refuse (ValidationError on ``licence``) growth the installed licence does not allow.

    Call inside the action's transaction, before its rows are written. Growth that is not
    billable under the licence's model costs nothing beyond one indexed read.
    """
    if max(users, organisations, storage_mb) <= 0:
        return
    status = state.current(count=False)
    if not status.enforcing:
        return
    model = status.licence.model if status.licence is not None else None
    adding = _amount(model, users, organisations, storage_mb)
    if adding <= 0:
        return
    if status.state == state.VALID:
        # Lock the licence row and count under the lock: concurrent creates queue here.
        status = state.current(lock=True)
    message = refusal(status, adding)
    if message:
        raise ValidationError({FIELD: message})


def refusals(rows: Sequence[dict[str, int]]) -> list[str | None]:
    """For a batch applied in order (the CSV import's dry run): each row's refusal or None.

    Each row is ``{"users": .., "organisations": .., "storage_mb": ..}``; rows that fit are
    counted before the next, so exactly the rows beyond the licence are named.
    """
    status = state.current()
    if not status.enforcing:
        return [None] * len(rows)
    model = status.licence.model if status.licence is not None else None
    results: list[str | None] = []
    taken = 0
    for row in rows:
        adding = _amount(
            model, row.get("users", 0), row.get("organisations", 0), row.get("storage_mb", 0)
        )
        message = refusal(status, adding, taken)
        if message is None:
            taken += max(adding, 0)
        results.append(message)
    return results
