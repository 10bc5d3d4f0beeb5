"""Portal login and logout. Session key rotated on login (Django's login())."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _

from ums.middleware import client_ip

from . import throttle


def safe_next(target: str | None) -> str | None:
    """Only local paths: never another host, scheme or protocol-relative URL."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or not url_has_allowed_host_and_scheme(target, allowed_hosts=set()):
        return None
    return target


class LoginForm(AuthenticationForm):
    username = forms.CharField(label=_("Username"), max_length=150)
    error_messages = {
        **AuthenticationForm.error_messages,
        "throttled": _(
            "Too many failed logins for this account or address. Wait a few minutes and try again."
        ),
    }

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if username and throttle.is_locked(username, client_ip(self.request)):
            raise ValidationError(self.error_messages["throttled"], code="throttled")
        return super().clean()


class LoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True

    def get_redirect_url(self) -> str:
        target = self.request.POST.get("next", self.request.GET.get("next", ""))
        return safe_next(target) or ""


class LogoutView(auth_views.LogoutView):
    next_page = "portal:login"
