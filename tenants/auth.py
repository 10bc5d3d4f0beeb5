"""Authentication of administrators by password, with throttling and the customer check."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from ums.middleware import client_ip

from . import throttle
from .models import Administrator


class LoginThrottled(PermissionDenied):
    """Too many failed logins for this account or address; try again later."""


class AdministratorBackend(ModelBackend):
    """Username + password, refused while throttled or when the customer tree is disabled."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Administrator | None:
        if not username or password is None:
            return None
        ip = client_ip(request) if request is not None else None
        if throttle.is_locked(username, ip):
            # PermissionDenied stops Django trying further backends and fires
            # user_login_failed, so the attempt is audited.
            raise LoginThrottled
        try:
            user = Administrator.objects.select_related("customer").get(username__iexact=username)
        except Administrator.DoesNotExist:
            # Spend the same time as a real check so usernames cannot be probed by timing.
            Administrator().set_password(password)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None

    def user_can_authenticate(self, user: Any) -> bool:
        return bool(user.is_active and user.customer.login_enabled())

    def get_user(self, user_id: Any) -> Administrator | None:
        try:
            user = Administrator.objects.select_related("customer").get(pk=user_id)
        except Administrator.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None

    # Permissions are area codes on the administrator, not Django's permission tables.
    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        return user_obj.permission_set() if user_obj.is_active else set()

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return user_obj.has_permission(perm)
