"""Portal page of the SpamAssassin update channels' signing keys (operators only, like the
load balancer certificates): list, set by pasting an armoured public key, delete. The
same actions as ``/api/v1/rule-channel-keys/`` (:mod:`deploy.rule_updates.keys`): the
key is parsed with GnuPG on the controller, refused keys are field errors, every change
is audited."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import View

from deploy.rule_key_models import RuleChannelKey
from deploy.rule_updates import keys
from tenants import permissions as perms
from ums.operators import is_operator
from ums.portal.views import PortalMixin, apply_validation_error


class RuleKeyForm(forms.Form):
    channel = forms.CharField(
        label=gettext_lazy("Channel"),
        max_length=253,
        widget=forms.TextInput(attrs={"list": "rule-channels", "autocomplete": "off"}),
        help_text=gettext_lazy("A SpamAssassin update channel, e.g. updates.spamassassin.org."),
    )
    public_key = forms.CharField(
        label=gettext_lazy("Public key"),
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        required=False,
        help_text=gettext_lazy(
            "The channel's ASCII-armoured OpenPGP public key (-----BEGIN PGP PUBLIC KEY "
            "BLOCK-----). Setting a key replaces the channel's key."
        ),
    )
    key_id = forms.CharField(
        label=gettext_lazy("Key id"),
        max_length=42,
        required=False,
        help_text=gettext_lazy("Optional: trust only this signing key of the key given."),
    )


class OperatorOnly(PortalMixin, View):
    """Tenants below the top-level customers do not learn the page exists."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated and not is_operator(request.user):
            raise Http404
        return super().dispatch(request, *args, **kwargs)


class RuleKeyListView(OperatorOnly):
    permission_required = perms.SERVERS_VIEW

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._page(request, RuleKeyForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_permission(perms.SERVERS_MANAGE):
            raise Http404
        form = RuleKeyForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                keys.set_channel_key(
                    actor=request.user,
                    channel=data["channel"].strip(),
                    public_key=data["public_key"],
                    key_id=data["key_id"],
                )
            except ValidationError as exc:
                apply_validation_error(form, exc)
            else:
                messages.success(
                    request,
                    _("The signing key of %(channel)s is set.")
                    % {"channel": data["channel"].strip()},
                )
                return redirect("servers:rule-key-list")
        return self._page(request, form, status=400)

    def _page(self, request: HttpRequest, form: RuleKeyForm, status: int = 200) -> HttpResponse:
        configured = list(getattr(settings, "UMS_SA_UPDATE_CHANNELS", []) or [])
        rows = list(RuleChannelKey.objects.all())
        keyed = {row.channel for row in rows}
        return render(
            request,
            "servers/rule_channel_keys.html",
            {
                "keys": rows,
                "configured": configured,
                "without_key": [c for c in configured if c not in keyed],
                "form": form,
                "can_manage": request.user.has_permission(perms.SERVERS_MANAGE),
            },
            status=status,
        )


class RuleKeyDeleteView(OperatorOnly):
    permission_required = perms.SERVERS_MANAGE

    def post(self, request: HttpRequest, channel: str) -> HttpResponse:
        if not keys.delete_channel_key(actor=request.user, channel=channel):
            raise Http404
        messages.success(
            request, _("The signing key of %(channel)s is deleted.") % {"channel": channel}
        )
        return redirect("servers:rule-key-list")
