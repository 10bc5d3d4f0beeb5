"""Portal login and logout. Session key rotated on login (Django's login()).

After the password step the administrator is sent on to the second-factor challenge (or to
enrolment when their customer requires a second factor they lack); the middleware holds
every other page until then.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from django import forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _

from ums.middleware import client_ip

from . import throttle
from .twofactor.session import Gate, gate


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
        try:
            return super().clean()
        except ValidationError as exc:
            problem = getattr(self.request, "ums_directory_problem", None)
            if problem is not None:
                raise ValidationError(directory_problem_message(problem), code=problem) from exc
            raise


def directory_problem_message(problem: str) -> str:
    if problem == "unreachable":
        return str(
            _(
                "Your organisation's directory cannot be reached right now (or its "
                "certificate could not be verified), so directory accounts cannot log in. "
                "Try again later; local accounts still work."
            )
        )
    if problem == "unavailable":
        return str(_("Directory (LDAP) login is not installed on this server."))
    return str(
        _(
            "Your organisation's directory refused the portal's own connection (its "
            "settings may be wrong). Ask your administrator."
        )
    )


class SsoStartForm(forms.Form):
    """Single sign-on by email address: the domain picks the customer's identity provider."""

    email = forms.EmailField(label=_("Work email"), max_length=254)


class LoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True

    def get_redirect_url(self) -> str:
        target = self.request.POST.get("next", self.request.GET.get("next", ""))
        return safe_next(target) or ""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["sso_form"] = SsoStartForm()
        return context

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        response = super().form_valid(form)
        state = gate(self.request, form.get_user())
        if state is Gate.OK:
            return response
        target = reverse("portal:two-factor" if state is Gate.CHALLENGE else "tenants:two-factor")
        following = self.get_redirect_url()
        if following:
            target += "?next=" + quote(following, safe="/")
        return HttpResponseRedirect(target)


class LogoutView(auth_views.LogoutView):
    next_page = "portal:login"
