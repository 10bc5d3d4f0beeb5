"""Audit of logins, failed logins and logouts, the failure count for throttling, and the
session record every login starts (see :mod:`tenants.session_records`)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from ums import auditing, context
from ums.middleware import client_ip

from . import session_records, throttle
from .models import Administrator
from .twofactor import session as twofactor_session


def login_method(request: Any, user: Any) -> str:
    """How the first factor was given: a password, the customer's directory, or SAML."""
    explicit = getattr(request, "ums_login_method", None)
    if explicit:
        return str(explicit)
    return "ldap" if getattr(user, "backend", "").endswith("LDAPBackend") else "password"


@receiver(user_logged_in)
def audit_login(sender: Any, request: Any, user: Administrator, **kwargs: Any) -> None:
    context.set_actor(user)
    method = login_method(request, user) if request is not None else "password"
    auditing.record("auth.login", obj=user, actor=user, extra={"method": method})


@receiver(user_logged_in)
def start_session(sender: Any, request: Any, user: Administrator, **kwargs: Any) -> None:
    """Every login proves the first factor only and starts a listed, revocable session."""
    if request is None or not hasattr(request, "session"):
        return
    session_records.start(request, user, login_method(request, user))
    twofactor_session.reset_on_login(request, user)


@receiver(user_logged_out)
def audit_logout(sender: Any, request: Any, user: Administrator | None, **kwargs: Any) -> None:
    if request is not None and hasattr(request, "session"):
        session_records.end(session_records.current_hash(request), session_records.ENDED_LOGOUT)
    if user is not None:
        auditing.record("auth.logout", obj=user, actor=user)


@receiver(user_login_failed)
def audit_login_failure(sender: Any, credentials: dict, request: Any = None, **kwargs: Any) -> None:
    username = str(credentials.get("username", ""))[:150]
    ip = client_ip(request) if request is not None else None
    directory_problem = getattr(request, "ums_directory_problem", None)
    # A directory that cannot be reached says nothing about the password: no lock for it.
    if directory_problem is None:
        throttle.note_failure(username, ip)
    known = Administrator.objects.select_related("customer").filter(username__iexact=username)
    target = known.first()
    auditing.record(
        "auth.login_failed",
        object_type="tenants.administrator",
        object_id=target.pk if target else None,
        object_repr=username,
        customer=target.customer if target else None,
        actor=None,
        extra={
            "username": username,
            **({"directory": directory_problem} if directory_problem else {}),
        },
    )
