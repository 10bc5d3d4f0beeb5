"""Portal forms for zones and nodes."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from tenants.forms import ActorForm, CustomerChoiceField
from ums import scoping
from ums.validators import no_control_characters

from .choices import Redundancy, Role, SiteKind
from .models import Zone


class ZoneForm(ActorForm):
    customer = CustomerChoiceField(label=_("Customer"))
    name = forms.CharField(label=_("Name"), max_length=100, validators=[no_control_characters])
    location = forms.CharField(
        label=_("Location"), max_length=200, required=False, validators=[no_control_characters]
    )
    site_kind = forms.ChoiceField(label=_("Site"), choices=SiteKind.choices)
    redundancy = forms.ChoiceField(label=_("Redundancy"), choices=Redundancy.choices)
    notes = forms.CharField(
        label=_("Notes"),
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        required=False,
        validators=[no_control_characters],
    )


class ZoneEditForm(ZoneForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.fields["customer"]


class NodeForm(ActorForm):
    zone = forms.ModelChoiceField(queryset=Zone.objects.none(), label=_("Zone"))
    roles = forms.MultipleChoiceField(
        label=_("Roles"),
        choices=Role.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
    )
    ssh_port = forms.IntegerField(label=_("SSH port"), min_value=1, max_value=65535)
    storage_service = forms.RegexField(
        label=_("Storage volume service"),
        regex=r"^[A-Za-z0-9][A-Za-z0-9@._-]{0,63}$",
        error_messages={"invalid": _("Use a service name of letters, digits and @ . _ - only.")},
    )
    disk_iops_capacity = forms.IntegerField(
        label=_("Disk IOPS capacity"),
        min_value=1,
        max_value=10_000_000,
        required=False,
        help_text=_("What the disks sustain (from a disk benchmark); empty if unknown."),
    )
    network_mbit_capacity = forms.IntegerField(
        label=_("Network capacity (Mbit/s)"),
        min_value=1,
        max_value=10_000_000,
        required=False,
        help_text=_("The usable link speed; empty if unknown."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["zone"].queryset = scoping.scope_queryset(Zone.objects.all(), self.actor)


class ServiceForm(forms.Form):
    service = forms.RegexField(
        label=_("Service"),
        regex=r"^[A-Za-z0-9][A-Za-z0-9@._-]{0,63}$",
        error_messages={"invalid": _("Use a service name of letters, digits and @ . _ - only.")},
    )
