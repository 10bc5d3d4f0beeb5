"""Portal form for creating an enrolment token.

The zone choice comes from the one scoping rule (only zones the administrator may see);
the action re-checks scope and permission, so the form only shapes input.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from tenants.forms import ActorForm, ScopedModelChoiceField
from ums.validators import no_control_characters, not_blank

from .enrolment import MAX_USES_LIMIT
from .models import Zone

MAX_LIFETIME_HOURS = 365 * 24


class ZoneChoiceField(ScopedModelChoiceField):
    """Zones in scope, labelled with their customer so equal names stay distinguishable."""

    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.name} ({obj.customer.name})"


class EnrolmentTokenForm(ActorForm):
    zone = ZoneChoiceField(
        Zone.objects.select_related("customer").order_by("customer_path", "name"),
        label=_("Zone"),
        empty_label=_("Choose a zone…"),
        help_text=_("Nodes registered with this token join this zone."),
    )
    name = forms.CharField(
        label=_("Token name"),
        max_length=100,
        validators=[no_control_characters, not_blank],
        help_text=_("For your own reference, e.g. “rack 4 mail stores”."),
    )
    max_uses = forms.IntegerField(
        label=_("Uses allowed"),
        min_value=1,
        max_value=MAX_USES_LIMIT,
        initial=1,
        help_text=_("How many nodes may register with it. Re-running the script is free."),
    )
    expires_in_hours = forms.IntegerField(
        label=_("Valid for (hours)"),
        min_value=1,
        max_value=MAX_LIFETIME_HOURS,
        initial=24,
        help_text=_("After this the token is refused, even if uses remain."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["zone"]
        field.pinned = self.data.get("zone") if self.is_bound else self.initial.get("zone")

    def clean_name(self) -> str:
        return self.cleaned_data["name"].strip()
