"""Portal pages of the password reset by mail (the rules are in tenants/password_reset.py).

``login/reset/`` asks for a username and always answers the same; the link in the mail
opens ``login/reset/<uid>/<token>/``, which asks for the new password twice. Both work
without JavaScript and without a session.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import View

from ums.middleware import client_ip

from . import password_reset

SENT = gettext_lazy(
    "If an account with this username exists and may reset its password, a mail with a "
    "link is on its way to the account's address."
)


class ResetRequestForm(forms.Form):
    username = forms.CharField(label=gettext_lazy("Username"), max_length=150)


class ResetPasswordForm(forms.Form):
    password = forms.CharField(
        label=gettext_lazy("New password"), widget=forms.PasswordInput, strip=False
    )
    password_confirm = forms.CharField(
        label=gettext_lazy("New password (again)"), widget=forms.PasswordInput, strip=False
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("password") != data.get("password_confirm"):
            self.add_error("password_confirm", _("The two passwords differ."))
        return data


class PasswordResetRequestView(View):
    template_name = "portal/password_reset.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, self.template_name, {"form": ResetRequestForm()})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = ResetRequestForm(request.POST)
        if not form.is_valid():
            return render(request, self.template_name, {"form": form})
        try:
            password_reset.request_reset(
                actor=None, username=form.cleaned_data["username"], ip=client_ip(request)
            )
        except password_reset.Throttled:
            form.add_error(
                None, _("Too many reset requests for this account or address; try again later.")
            )
            return render(request, self.template_name, {"form": form}, status=429)
        return render(request, self.template_name, {"form": None, "sent": SENT})


class PasswordResetConfirmView(View):
    template_name = "portal/password_reset_confirm.html"

    def get(self, request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
        admin = password_reset.admin_for_link(uidb64, token)
        form = ResetPasswordForm() if admin else None
        return render(request, self.template_name, {"form": form}, status=200 if admin else 400)

    def post(self, request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
        admin = password_reset.admin_for_link(uidb64, token)
        if admin is None:
            return render(request, self.template_name, {"form": None}, status=400)
        form = ResetPasswordForm(request.POST)
        if form.is_valid():
            try:
                password_reset.complete_reset(
                    actor=None, admin=admin, password=form.cleaned_data["password"]
                )
            except ValidationError as exc:
                for message in exc.message_dict.get("password", exc.messages):
                    form.add_error("password", message)
            else:
                messages.success(request, _("Your password was changed. Log in with it now."))
                return redirect("portal:login")
        return render(request, self.template_name, {"form": form})
