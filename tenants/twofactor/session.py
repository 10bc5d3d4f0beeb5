"""What the current session has proven, kept in the server-side session data.

* ``SID``: a random id naming this session's :class:`~tenants.models_identity.SessionRecord`.
* ``LOGIN_AT``: when the password (or SAML / LDAP) step happened; the absolute timeout
  counts from here.
* ``VERIFIED``: when and how the second factor was passed in this session.
* ``NO_FACTOR_CHECKED``: when it was last found that no second factor is needed; rechecked
  every minute so a new policy or a factor enrolled elsewhere takes effect quickly without a
  query on every request.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from . import policy

SID = "_ums_sid"
LOGIN_AT = "_ums_login_at"
VERIFIED = "_ums_2fa"
NO_FACTOR_CHECKED = "_ums_2fa_none"
RECHECK_SECONDS = 60


class Gate(enum.Enum):
    OK = "ok"
    CHALLENGE = "challenge"
    ENROL = "enrol"


def _now() -> float:
    return time.time()


def reset_on_login(request: HttpRequest, admin: Any) -> Gate:
    """A new login proves only the first factor: forget any earlier verification."""
    session = request.session
    session.pop(VERIFIED, None)
    session.pop(NO_FACTOR_CHECKED, None)
    session[LOGIN_AT] = _now()
    return gate(request, admin)


def gate(request: HttpRequest, admin: Any = None) -> Gate:
    """Where the session stands: fine, owes a second factor, or must enrol one first."""
    session = request.session
    if session.get(VERIFIED):
        return Gate.OK
    checked = session.get(NO_FACTOR_CHECKED)
    now = _now()
    if isinstance(checked, int | float) and 0 <= now - checked < RECHECK_SECONDS:
        return Gate.OK
    admin = admin if admin is not None else request.user
    if policy.is_enrolled(admin):
        return Gate.CHALLENGE
    if policy.two_factor_required(admin):
        return Gate.ENROL
    session[NO_FACTOR_CHECKED] = now
    return Gate.OK


def mark_verified(request: HttpRequest, method: str) -> None:
    """Record a passed second factor and rotate the session key.

    The key changes so that a key seen before this point (say, on a shared machine during
    the password step) is not the key of the now fully authenticated session.
    """
    session = request.session
    session[VERIFIED] = {"at": _now(), "method": method}
    session.pop(NO_FACTOR_CHECKED, None)
    session.cycle_key()


def verified(request: HttpRequest) -> dict[str, Any] | None:
    value = request.session.get(VERIFIED)
    return value if isinstance(value, dict) else None


def is_fresh(request: HttpRequest) -> bool:
    value = verified(request)
    if not value:
        return False
    return 0 <= _now() - float(value.get("at", 0)) <= settings.TWO_FACTOR_FRESH_SECONDS


@dataclass(frozen=True)
class FreshProof:
    """Evidence that ``admin_id`` passed a second factor at ``at`` (epoch seconds).

    Only :func:`proof_from_session` and :func:`tenants.twofactor.verify.proof_from_code`
    make one; actions that need a fresh second factor take it as an argument.
    """

    admin_id: int
    at: float
    method: str

    def holds_for(self, admin: Any) -> bool:
        age = _now() - self.at
        return self.admin_id == admin.pk and 0 <= age <= settings.TWO_FACTOR_FRESH_SECONDS


def proof_from_session(request: HttpRequest) -> FreshProof | None:
    value = verified(request)
    if not value or not is_fresh(request) or not request.user.is_authenticated:
        return None
    return FreshProof(
        admin_id=request.user.pk, at=float(value["at"]), method=str(value.get("method", ""))
    )


def proof_now(admin: Any, method: str) -> FreshProof:
    return FreshProof(admin_id=admin.pk, at=_now(), method=method)
