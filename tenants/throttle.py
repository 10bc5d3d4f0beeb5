"""Login throttling per account and per source address.

Failures are rows in the database, so a restart does not forget them and a client cannot
reset them (no cookie, no successful login elsewhere clears the count): they only age out
of the window. Checked before the password is even verified.
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.utils import timezone

from .models import LoginFailure


def _window_start() -> datetime.datetime:
    return timezone.now() - datetime.timedelta(seconds=settings.LOGIN_THROTTLE_WINDOW_SECONDS)


def _count(kind: str, key: str) -> int:
    return LoginFailure.objects.filter(kind=kind, key=key, at__gte=_window_start()).count()


def account_key(username: str) -> str:
    return username.strip().lower()[:200]


def is_locked(username: str, ip: str | None) -> bool:
    if _count(LoginFailure.KIND_ACCOUNT, account_key(username)) >= settings.LOGIN_THROTTLE_FAILURES:
        return True
    return bool(ip and _count(LoginFailure.KIND_IP, ip) >= settings.LOGIN_THROTTLE_IP_FAILURES)


def note_failure(username: str, ip: str | None) -> None:
    rows = [LoginFailure(kind=LoginFailure.KIND_ACCOUNT, key=account_key(username))]
    if ip:
        rows.append(LoginFailure(kind=LoginFailure.KIND_IP, key=ip))
    LoginFailure.objects.bulk_create(rows)


def purge_expired() -> int:
    """Delete failures older than the window (run from a periodic task)."""
    # Password-reset requests count over an hour (tenants.password_reset), whatever the
    # login window is.
    reset_since = timezone.now() - datetime.timedelta(hours=1)
    deleted, _ = (
        LoginFailure.objects.filter(at__lt=_window_start())
        .exclude(kind__in=("reset", "resetip"), at__gte=reset_since)
        .delete()
    )
    return deleted


# Second-factor attempts are counted per administrator, never per session: logging in again
# (a new session, a new address) cannot buy more guesses at a six-digit code.


def _second_factor_key(admin_id: int) -> str:
    return str(admin_id)


def second_factor_locked(admin_id: int) -> bool:
    count = _count(LoginFailure.KIND_SECOND_FACTOR, _second_factor_key(admin_id))
    return count >= settings.TWO_FACTOR_THROTTLE_FAILURES


def note_second_factor_failure(admin_id: int) -> None:
    LoginFailure.objects.create(
        kind=LoginFailure.KIND_SECOND_FACTOR, key=_second_factor_key(admin_id)
    )
