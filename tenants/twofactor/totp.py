"""Time-based one-time passwords (RFC 6238) for authenticator apps, through pyotp.

A code is accepted for the current 30-second step and one step either side (clock drift),
and only if its step is later than the last one accepted: the same code never works twice,
and neither does an older one once a newer one was used.
"""

from __future__ import annotations

import datetime
import hmac
import re

import pyotp
from django.conf import settings

from ..models_identity import TotpDevice

DIGITS = 6
STEP_SECONDS = 30
DRIFT_STEPS = 1
# 160 bits, the size RFC 4226 recommends for the shared secret.
SECRET_LENGTH = 32

_CODE = re.compile(r"^[0-9]{6}$")


def new_secret() -> str:
    return pyotp.random_base32(SECRET_LENGTH)


def normalise(code: str) -> str:
    return re.sub(r"[\s-]", "", code or "")


def looks_like_code(code: str) -> bool:
    return bool(_CODE.match(normalise(code)))


def provisioning_uri(secret: str, account: str) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=account, issuer_name=settings.TOTP_ISSUER
    )


def code_at(secret: str, when: datetime.datetime) -> str:
    """The code an app shows at ``when`` (used by tests and nothing else)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).at(when)


def matching_step(secret: str, code: str, now: datetime.datetime | None = None) -> int | None:
    """The time step ``code`` belongs to, within the allowed drift, else None."""
    code = normalise(code)
    if not _CODE.match(code):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = totp.timecode(now or datetime.datetime.now(tz=datetime.UTC))
    found = None
    # Compare against every candidate (no early exit) so timing says nothing about which.
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def consume(device: TotpDevice, code: str, now: datetime.datetime | None = None) -> bool:
    """Accept ``code`` once: the step is recorded in the same conditional UPDATE that checks it.

    Two requests racing with the same code both match, but only one UPDATE finds the old
    counter still lower, so only one succeeds.
    """
    step = matching_step(device.secret, code, now)
    if step is None:
        return False
    updated = TotpDevice.objects.filter(pk=device.pk, last_used_counter__lt=step).update(
        last_used_counter=step
    )
    if updated:
        device.last_used_counter = step
    return bool(updated)
