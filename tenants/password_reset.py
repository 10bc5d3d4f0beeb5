"""Password reset by mail for administrators: who may, the single-use link, the throttle.

* A request names a username. Whatever the outcome, the requester is told the same thing
  (a mail was sent if the account exists and may reset), so the form reveals no accounts.
* Refused (no mail, audited as refused) for accounts that do not own a local password:
  inactive accounts, accounts of a disabled customer, and accounts that log in through a
  directory (LDAP) or single sign-on (SAML), whose password belongs to that system; a reset
  there would create a second way in that the organisation does not control.
* Accounts with a required second factor may reset: the new password still needs the
  factor at login, so a mailbox alone never gives the account away.
* The link is built from ``UMS_BASE_URL`` and carries Django's password-reset token, which
  expires after ``PASSWORD_RESET_TIMEOUT`` seconds and stops working as soon as the password
  (or last login) changes: it is single use.
* Requests are throttled per username and per source address within an hour (rows in the
  login-failure table, so a restart forgets nothing), counted for every username so the
  throttle reveals no accounts either.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes, force_str
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode
from django.utils.translation import gettext as _
from django.utils.translation import override

from ums import auditing
from ums.actions import action

from . import throttle
from .actions import _validate_password
from .models import Administrator, LoginFailure

logger = logging.getLogger(__name__)

KIND_ACCOUNT = "reset"
KIND_ADDRESS = "resetip"
WINDOW = datetime.timedelta(hours=1)


class Throttled(Exception):
    """Too many reset requests for this username or from this address in the last hour."""


def refusal(admin: Administrator) -> str | None:
    """Why ``admin`` may not reset a password by mail, or None when it may."""
    if not admin.is_active or not admin.customer.login_enabled():
        return "inactive"
    if not admin.has_usable_password():
        return "external_login"  # provisioned by SSO or a directory: no local password
    from .sso.ldap import directory_for

    if directory_for(admin.username) is not None:
        return "directory"
    return None


def _throttled(username: str, ip: str | None) -> bool:
    since = timezone.now() - WINDOW
    recent = LoginFailure.objects.filter(at__gte=since)
    if (
        recent.filter(kind=KIND_ACCOUNT, key=throttle.account_key(username)).count()
        >= settings.PASSWORD_RESET_PER_ACCOUNT
    ):
        return True
    return bool(
        ip
        and recent.filter(kind=KIND_ADDRESS, key=ip).count() >= settings.PASSWORD_RESET_PER_ADDRESS
    )


def reset_link(admin: Administrator) -> str:
    uid = urlsafe_base64_encode(force_bytes(admin.pk))
    token = default_token_generator.make_token(admin)
    path = reverse("portal:password-reset-confirm", args=[uid, token])
    return f"{settings.BASE_URL}{path}"


def _send(admin: Administrator) -> None:
    minutes = settings.PASSWORD_RESET_TIMEOUT // 60
    with override(admin.language or settings.LANGUAGE_CODE):
        subject = _("Reset your UMS password")
        body = _(
            "Someone (hopefully you) asked to reset the password of the UMS account "
            "%(username)s.\n\nOpen this link within %(minutes)d minutes to choose a new "
            "password; it works once:\n\n%(link)s\n\nIf you did not ask for this, ignore this "
            "mail: your password stays as it is."
        ) % {"username": admin.username, "minutes": minutes, "link": reset_link(admin)}
    send_mail(subject, body, None, [admin.email])


@action
def request_reset(*, actor: Any = None, username: str, ip: str | None) -> None:
    """Send a reset link to ``username``'s address if it may reset; raises Throttled.

    Says nothing about whether the account exists: callers answer the same either way.
    """
    username = username.strip()[:150]
    if _throttled(username, ip):
        raise Throttled
    rows = [LoginFailure(kind=KIND_ACCOUNT, key=throttle.account_key(username))]
    if ip:
        rows.append(LoginFailure(kind=KIND_ADDRESS, key=ip))
    LoginFailure.objects.bulk_create(rows)
    admin = (
        Administrator.objects.select_related("customer").filter(username__iexact=username).first()
    )
    if admin is None:
        return
    why = refusal(admin)
    if why is not None:
        auditing.record(
            "administrator.password_reset_refused", obj=admin, actor=None, extra={"reason": why}
        )
        return
    auditing.record("administrator.password_reset_requested", obj=admin, actor=None)
    admin_id = admin.pk
    # Mailed after commit: the audit record exists before the link does.
    transaction.on_commit(lambda: _send(Administrator.objects.get(pk=admin_id)))


def admin_for_link(uidb64: str, token: str) -> Administrator | None:
    """The administrator a valid, unexpired, unused link is for; None otherwise."""
    try:
        pk = int(force_str(urlsafe_base64_decode(uidb64)))
    except (TypeError, ValueError, OverflowError):
        return None
    if not 0 < pk < 2**63:
        return None
    admin = Administrator.objects.select_related("customer").filter(pk=pk).first()
    if admin is None or refusal(admin) is not None:
        return None
    if not default_token_generator.check_token(admin, token):
        return None
    return admin


@action
def complete_reset(*, actor: Any = None, admin: Administrator, password: str) -> None:
    """Set the new password chosen through a reset link (validated like any other)."""
    admin = Administrator.objects.select_for_update().get(pk=admin.pk)
    if refusal(admin) is not None:
        raise ValidationError({"password": _("This account cannot reset its password here.")})
    _validate_password(password, admin)
    admin.set_password(password)
    admin.save(update_fields=["password"])
    auditing.record("administrator.password_reset", obj=admin, actor=None)
