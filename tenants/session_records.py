"""Active sessions: one record per signed-in browser, checked on every request.

A record is created at login (any login path fires Django's ``user_logged_in``), touched by
:class:`tenants.middleware.IdentityMiddleware` at most once a minute, and ends when its owner
logs out, revokes it ("sign out everywhere else"), or it runs past the idle or absolute
timeout. Revocation works whatever the session engine, because the middleware refuses a
session whose record is gone or ended: the session store itself need not be searched.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from ums.middleware import client_ip

from .models_identity import SessionRecord
from .twofactor import session as twofactor_session

TOUCH_SECONDS = 60
USER_AGENT_MAX = 300

ENDED_LOGOUT = "logout"
ENDED_REVOKED = "revoked"
ENDED_IDLE = "idle"
ENDED_ABSOLUTE = "absolute"
ENDED_UNKNOWN = "unknown"


def hash_sid(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def current_hash(request: HttpRequest) -> str | None:
    sid = request.session.get(twofactor_session.SID)
    return hash_sid(sid) if isinstance(sid, str) else None


def _user_agent(request: HttpRequest) -> str:
    agent = request.META.get("HTTP_USER_AGENT", "")
    return "".join(ch for ch in agent if ch.isprintable())[:USER_AGENT_MAX]


def start(request: HttpRequest, admin: Any, method: str = "") -> SessionRecord:
    """Name the session just logged in and record it (called from the login signal)."""
    sid = secrets.token_urlsafe(32)
    request.session[twofactor_session.SID] = sid
    return SessionRecord.objects.create(
        owner_id=admin.pk,
        key_hash=hash_sid(sid),
        ip=client_ip(request) if request.META.get("REMOTE_ADDR") else None,
        user_agent=_user_agent(request),
        method=method[:16],
    )


def end(key_hash: str | None, reason: str) -> None:
    if key_hash:
        SessionRecord.objects.filter(key_hash=key_hash, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), ended_reason=reason
        )


def check(request: HttpRequest) -> str | None:
    """Why the authenticated session must end now, or None if it may go on.

    One indexed read per request; the write that keeps "last seen" current happens at most
    once a minute per session.
    """
    session = request.session
    login_at = session.get(twofactor_session.LOGIN_AT)
    key_hash = current_hash(request)
    if key_hash is None or not isinstance(login_at, int | float):
        return ENDED_UNKNOWN
    if time.time() - login_at > settings.SESSION_ABSOLUTE_TIMEOUT:
        end(key_hash, ENDED_ABSOLUTE)
        return ENDED_ABSOLUTE
    record = (
        SessionRecord.objects.filter(key_hash=key_hash)
        .only("id", "owner_id", "revoked_at", "last_seen_at", "ip")
        .first()
    )
    if record is None or record.owner_id != request.user.pk:
        return ENDED_UNKNOWN
    if record.revoked_at is not None:
        return ENDED_REVOKED
    now = timezone.now()
    idle = now - record.last_seen_at
    if idle > datetime.timedelta(seconds=settings.SESSION_IDLE_TIMEOUT):
        end(key_hash, ENDED_IDLE)
        return ENDED_IDLE
    if idle >= datetime.timedelta(seconds=TOUCH_SECONDS):
        SessionRecord.objects.filter(pk=record.pk).update(
            last_seen_at=now, ip=client_ip(request), user_agent=_user_agent(request)
        )
    return None


def purge_expired() -> int:
    """Forget records that cannot matter any more: past the absolute timeout either way.

    A session whose record is purged is itself older than the absolute timeout, which the
    middleware enforces from the session's own login time, so nothing comes back to life.
    """
    horizon = timezone.now() - datetime.timedelta(seconds=settings.SESSION_ABSOLUTE_TIMEOUT)
    deleted, _ = SessionRecord.objects.filter(last_seen_at__lt=horizon).delete()
    return deleted


def end_others(owner_id: int, keep_hash: str | None, reason: str) -> int:
    """Mark an owner's other sessions ended (say, Django dropped them after a new password)."""
    others = SessionRecord.objects.filter(owner_id=owner_id, revoked_at__isnull=True)
    if keep_hash:
        others = others.exclude(key_hash=keep_hash)
    return others.update(revoked_at=timezone.now(), ended_reason=reason)
