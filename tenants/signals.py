"""Audit of logins, failed logins and logouts, and the failure count for throttling."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from ums import auditing, context
from ums.middleware import client_ip

from . import throttle
from .models import Administrator


@receiver(user_logged_in)
def audit_login(sender: Any, request: Any, user: Administrator, **kwargs: Any) -> None:
    context.set_actor(user)
    auditing.record("auth.login", obj=user, actor=user)


@receiver(user_logged_out)
def audit_logout(sender: Any, request: Any, user: Administrator | None, **kwargs: Any) -> None:
    if user is not None:
        auditing.record("auth.logout", obj=user, actor=user)


@receiver(user_login_failed)
def audit_login_failure(sender: Any, credentials: dict, request: Any = None, **kwargs: Any) -> None:
    username = str(credentials.get("username", ""))[:150]
    ip = client_ip(request) if request is not None else None
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
        extra={"username": username},
    )
