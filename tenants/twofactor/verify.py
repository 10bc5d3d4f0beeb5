"""Checking a second factor: throttled per account, audited, never reset by a new login.

Every path that accepts a code (the login challenge, a step-up before a sensitive change,
an API token request with ``otp``) goes through :func:`check_code`; security keys go
through :mod:`tenants.twofactor.webauthn` and report here with :func:`note_result`.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.utils.translation import gettext_lazy as _

from ums import auditing

from .. import throttle
from ..models import Administrator
from ..models_identity import TotpDevice
from . import recovery, totp
from .session import FreshProof, proof_now

METHOD_TOTP = "totp"
METHOD_RECOVERY = "recovery"
METHOD_WEBAUTHN = "webauthn"


class SecondFactorLocked(PermissionDenied):
    """Too many wrong second-factor attempts for this account; wait for the window to pass."""

    default_message = _("Too many wrong codes for this account. Wait a few minutes and try again.")

    def __init__(self) -> None:
        super().__init__(str(self.default_message))


def ensure_not_locked(admin: Administrator) -> None:
    if throttle.second_factor_locked(admin.pk):
        raise SecondFactorLocked


def note_result(admin: Administrator, method: str | None, *, purpose: str) -> None:
    """Audit one attempt; a failure also counts towards the account's lock."""
    if method is None:
        throttle.note_second_factor_failure(admin.pk)
        auditing.record(
            "auth.second_factor_failed", obj=admin, actor=admin, extra={"purpose": purpose}
        )
        return
    if method == METHOD_RECOVERY:
        auditing.record(
            "auth.recovery_code_used",
            obj=admin,
            actor=admin,
            extra={"remaining": recovery.remaining(admin)},
        )
    auditing.record(
        "auth.second_factor_passed",
        obj=admin,
        actor=admin,
        extra={"method": method, "purpose": purpose},
    )


def check_code(
    admin: Administrator, code: str, *, purpose: str, allow_recovery: bool = True
) -> str | None:
    """Verify an app code (or a recovery code); return the method that passed, else None.

    Raises :class:`SecondFactorLocked` before looking at the code when the account has too
    many recent failures: a correct code is refused too, so guessing gains nothing.
    """
    ensure_not_locked(admin)
    method = None
    if totp.looks_like_code(code):
        device = TotpDevice.objects.filter(owner=admin, confirmed_at__isnull=False).first()
        if device is not None and totp.consume(device, code):
            method = METHOD_TOTP
    elif allow_recovery and recovery.consume(admin, code):
        method = METHOD_RECOVERY
    note_result(admin, method, purpose=purpose)
    return method


def proof_from_code(admin: Administrator, code: str | None, *, purpose: str) -> FreshProof | None:
    """A fresh proof from an app code sent with a request (the API's ``otp`` field)."""
    if not code:
        return None
    method = check_code(admin, code, purpose=purpose, allow_recovery=False)
    return proof_now(admin, method) if method else None
