"""Portal forms of exclusion policies and per mail store settings. They only type the
values: the actions check them (every error at once) for the portal and the API alike."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from tenants.forms import ActorForm

from .forms import _keep
from .store_settings import COMMON_COMPRESSION, OPENZFS_COMPRESSION


class ExclusionForm(ActorForm):
    excluded = forms.BooleanField(label=_("Exclude from backups"), required=False)
    folders = forms.CharField(
        label=_("Excluded folders"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_(
            "One folder per line, e.g. Trash or Junk; its subfolders go with it. "
            "Added to the folders excluded above."
        ),
    )

    def action_fields(self) -> dict[str, Any]:
        lines = [line.strip("\r") for line in self.cleaned_data["folders"].split("\n")]
        return {
            "excluded": self.cleaned_data["excluded"],
            "folders": [line for line in lines if line.strip()],
        }


class MailboxExclusionForm(ExclusionForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.fields["folders"]

    def action_fields(self) -> dict[str, Any]:
        return {"excluded": self.cleaned_data["excluded"]}


class MailStoreSettingsForm(ActorForm):
    compression = forms.ChoiceField(
        label=_("Compression"),
        required=False,
        choices=[("", _("Global setting"))]
        + [(c, c) for c in (*COMMON_COMPRESSION, *OPENZFS_COMPRESSION)],
        help_text=_("lz4 and zstd need OpenZFS; zfs-fuse knows on, lzjb, gzip and zle."),
    )
    dedup = forms.ChoiceField(
        label=_("Deduplication"),
        required=False,
        choices=[
            ("", _("Global setting")),
            ("auto", _("Auto (only with more than 256 GB of memory)")),
            ("on", _("On")),
            ("off", _("Off")),
        ],
        help_text=_(
            "The dedup table must fit in memory: below 256 GB of RAM dedup stays off "
            "whatever is chosen here."
        ),
    )
    enabled = forms.NullBooleanField(
        label=_("Scheduled snapshots"),
        required=False,
        widget=forms.Select(
            choices=[("unknown", _("Customers' policy")), ("true", _("On")), ("false", _("Off"))]
        ),
    )
    hourly_keep = _keep(_("Hourly snapshots kept"), "hourly_keep")
    daily_keep = _keep(_("Daily snapshots kept"), "daily_keep")
    monthly_keep = _keep(_("Monthly snapshots kept"), "monthly_keep")
