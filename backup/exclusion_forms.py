"""Portal forms of exclusion policies and per mail store settings. They only type the
values: the actions check them (every error at once) for the portal and the API alike."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from tenants.forms import ActorForm

from .choices import TargetKind, TierKind
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
    tier_days = forms.IntegerField(
        label=_("Tier messages idle for (days)"),
        required=False,
        min_value=1,
        max_value=36500,
        help_text=_(
            "Messages with no delivery and no flag change (such as the first read) for this "
            "many days move to the tier and stay readable over IMAP and POP3. Empty: no tiering."
        ),
    )
    tier_kind = forms.ChoiceField(
        label=_("Tier"),
        required=False,
        choices=[("", _("None")), *TierKind.choices],
    )
    tier_path = forms.CharField(
        label=_("Tier folder"),
        required=False,
        max_length=300,
        help_text=_("For a folder tier: where the NFS, CIFS or FUSE mount is on the node."),
    )
    tier_target = forms.TypedChoiceField(
        label=_("Tier S3 target"),
        required=False,
        coerce=int,
        empty_value=None,
        help_text=_("For an S3 tier: the bucket of this backup target, mounted with s3fs."),
    )
    tier_recall = forms.BooleanField(
        label=_("Bring read messages back to the mail store"),
        required=False,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from ums import scoping

        from .models import BackupTarget

        targets = scoping.scope_queryset(
            BackupTarget.objects.filter(kind=TargetKind.S3).order_by("name"), self.actor
        )
        self.fields["tier_target"].choices = [("", _("None"))] + [(t.pk, t.name) for t in targets]
