"""Portal forms of cloud files: the policy of a customer and the revocation of links."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from . import actions

_TRI = [("", _("Inherit")), ("yes", _("Yes")), ("no", _("No"))]


class FilesPolicyForm(forms.Form):
    """Every field empty inherits the parent's value (shown beside it)."""

    internal_shares = forms.ChoiceField(
        label=_("Sharing with colleagues"), choices=_TRI, required=False
    )
    external_links = forms.ChoiceField(label=_("External links"), choices=_TRI, required=False)
    password_required = forms.ChoiceField(
        label=_("External links need a password"), choices=_TRI, required=False
    )
    expire_days = forms.IntegerField(
        label=_("External links expire after (days, 0: never)"),
        min_value=0,
        max_value=actions.MAX_EXPIRE_DAYS,
        required=False,
    )
    quota_mb = forms.IntegerField(
        label=_("Cloud quota per user (MB, 0: the mailbox's quota)"),
        min_value=0,
        max_value=actions.MAX_QUOTA_MB,
        required=False,
    )

    def __init__(self, *args: Any, actor: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actor = actor

    def action_fields(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        for key in ("internal_shares", "external_links", "password_required"):
            data[key] = {"yes": True, "no": False}.get(data.get(key) or "")
        return data


class RevokeMailboxForm(forms.Form):
    email = forms.EmailField(label=_("Mailbox address"), max_length=254)
