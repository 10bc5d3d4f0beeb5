"""Installing a licence: the one state change of this app (portal, API and CLI call it).

Only **operators** may: administrators of a top-level customer holding ``servers.manage``
(the licence binds the whole installation, not one tenant). A licence is refused, with
nothing changed, when it is malformed, altered, signed by a key the product does not know,
or already expired. Every installation is audited (``licence.install``) with the old and
new terms.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import formats, timezone
from django.utils.translation import gettext as _

from ums import auditing
from ums.actions import action, require_permission
from ums.operators import is_operator

from . import document, keys, state
from .models import InstalledLicence

MANAGE_PERMISSION = "servers.manage"
VIEW_PERMISSION = "servers.view"


def require_operator(actor: Any, code: str) -> None:
    if actor is None:
        return
    require_permission(actor, code)
    if not is_operator(actor):
        raise PermissionDenied(_("Only operators of the installation manage its licence."))


def terms(licence: document.Licence | None) -> dict[str, Any]:
    """What the audit record keeps of a licence."""
    if licence is None:
        return {}
    return {
        "licence_id": licence.licence_id,
        "licensee": licence.licensee,
        "model": licence.model,
        "limit": licence.limit,
        "issued": licence.issued,
        "expires": licence.expires,
        "key": licence.key_id,
    }


def _audit_customer(actor: Any) -> Any:
    """Whose audit log shows the change: the operator's customer (the first top-level
    customer when the CLI installs), so operators find it in the portal."""
    if actor is not None:
        return actor.customer
    customers = apps.get_model("tenants", "Customer")._default_manager
    return customers.filter(parent__isnull=True).order_by("pk").first()


@action
def install_licence(*, actor: Any, text: str) -> document.Licence:
    """Verify ``text`` and make it the installation's licence."""
    require_operator(actor, MANAGE_PERMISSION)
    try:
        licence = document.verify(text, keys.accepted_keys())
    except document.LicenceError as exc:
        raise ValidationError({"text": exc.message}, code=exc.code) from exc
    if licence.is_expired(timezone.now()):
        raise ValidationError(
            {
                "text": _("This licence expired on %(date)s; install a current one.")
                % {"date": formats.date_format(licence.expires)}
            },
            code="expired",
        )
    previous = state.current(lock=True, count=False)
    row = InstalledLicence.objects.create(
        text=text.strip() + "\n",
        licence_id=licence.licence_id,
        installed_by_id=getattr(actor, "pk", None),
    )
    auditing.record(
        "licence.install",
        obj=row,
        customer=_audit_customer(actor),
        object_repr=f"{licence.licence_id} ({licence.licensee})",
        before=terms(previous.licence),
        after=terms(licence),
    )
    return licence
