"""Portal form of a chat organisation: the bot key write-only, streams one per line."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from tenants.forms import ActorForm, CustomerChoiceField
from ums.validators import no_control_characters

from .models import MAX_RETENTION_DAYS

_TEXT = [no_control_characters]


class ChatRealmForm(ActorForm):
    """Model validators run in the action; the form only types the values."""

    customer = CustomerChoiceField(label=_("Customer"))
    name = forms.CharField(label=_("Name"), max_length=100, validators=_TEXT)
    url = forms.CharField(
        label=_("Server URL"), max_length=300, validators=_TEXT,
        help_text=_("The organisation's address, e.g. https://chat.example.org"),
    )  # fmt: skip
    bot_email = forms.EmailField(label=_("Administrator bot e-mail"), max_length=254)
    bot_api_key = forms.CharField(
        label=_("Administrator bot API key"),
        max_length=200,
        required=False,
        validators=_TEXT,
        widget=forms.PasswordInput(render_value=False),
        help_text=_("Stored encrypted, never shown. Leave blank to keep the current one."),
    )
    default_streams = forms.CharField(
        label=_("Default streams"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("One stream name per line; every user of the organisation joins them."),
    )
    retention_days = forms.IntegerField(
        label=_("Message retention (days)"),
        min_value=1,
        max_value=MAX_RETENTION_DAYS,
        required=False,
        help_text=_("Messages of the default streams are deleted after this; empty: kept."),
    )
    is_enabled = forms.BooleanField(label=_("Enabled"), required=False, initial=True)

    def clean_default_streams(self) -> list[str]:
        text = self.cleaned_data.get("default_streams") or ""
        return [line.strip() for line in text.splitlines() if line.strip()]

    def action_fields(self) -> dict[str, Any]:
        return dict(self.cleaned_data)


class ChatRealmEditForm(ChatRealmForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        initial = kwargs.get("initial") or {}
        if isinstance(initial.get("default_streams"), list):
            initial["default_streams"] = "\n".join(initial["default_streams"])
        super().__init__(*args, **kwargs)
        del self.fields["customer"]
