"""The portal form of a customer's replication policy: its own values, or inherit."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from tenants.forms import ActorForm

from .models import ReplicationPolicy

VALUE_FIELDS = ReplicationPolicy.audit_fields


def _number(label: Any, low: int, high: int, help_text: Any = "") -> forms.IntegerField:
    return forms.IntegerField(
        label=label, min_value=low, max_value=high, required=False, help_text=help_text
    )


class ReplicationPolicyForm(ActorForm):
    """Model validators run again in the action; the form types and bounds the values."""

    inherit = forms.BooleanField(
        label=_("Inherit the policy of the parent customer"),
        required=False,
        help_text=_(
            "Ticked: this customer has no policy of its own; the values below are ignored."
        ),
    )
    replicas = _number(_("Replicas per domain"), 0, 3)
    zone_rule = forms.ChoiceField(
        label=_("Replica zone"), choices=ReplicationPolicy.ZONE_RULES, required=False
    )
    sync_interval_minutes = _number(
        _("Sync every (minutes)"),
        1,
        1440,
        _("A failover loses at most the mail acknowledged in this interval plus one sync."),
    )
    max_lag_minutes = _number(_("Alert when the lag exceeds (minutes)"), 1, 10080)
    auto_failover = forms.BooleanField(label=_("Fail over automatically"), required=False)
    failover_delay_seconds = _number(
        _("After the primary is offline for (seconds)"),
        0,
        86400,
        _(
            "Counted from the first failed liveness check of the primary (checked every "
            "few seconds); an outage shorter than this never fails over. Default: 30."
        ),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("inherit"):
            return data
        for name in VALUE_FIELDS:
            missing = data.get(name) in (None, "") and name != "auto_failover"
            if missing and name not in self.errors:
                self.add_error(name, _("This field is required."))
        return data

    def action_fields(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in VALUE_FIELDS}
