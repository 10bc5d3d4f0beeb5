"""Portal forms of backups: a target (one form for every kind, secrets write-only), a
snapshot policy."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from tenants.forms import ActorForm, CustomerChoiceField
from ums.validators import no_control_characters

from .choices import MAX_KEEP, TargetKind

_TEXT = [no_control_characters]


def _text(label: Any, max_length: int, **kwargs: Any) -> forms.CharField:
    return forms.CharField(
        label=label, max_length=max_length, required=False, validators=_TEXT, **kwargs
    )


class BackupTargetForm(ActorForm):
    """Model validators run in the action; the form only types the values."""

    customer = CustomerChoiceField(label=_("Customer"))
    name = forms.CharField(label=_("Name"), max_length=100, validators=_TEXT)
    kind = forms.ChoiceField(label=_("Kind"), choices=TargetKind.choices)
    s3_endpoint = _text(_("S3 endpoint URL"), 300)
    s3_region = _text(_("S3 region"), 63)
    s3_bucket = _text(_("S3 bucket"), 63)
    s3_prefix = _text(_("S3 prefix"), 300)
    s3_access_key = _text(_("S3 access key"), 128)
    s3_secret_key = _text(
        _("S3 secret key"),
        1000,
        widget=forms.PasswordInput(render_value=False),
        help_text=_("Stored encrypted, never shown. Leave blank to keep the current one."),
    )
    s3_server_side_encryption = forms.BooleanField(
        label=_("S3 server-side encryption"), required=False
    )
    cifs_server = _text(_("SMB server"), 253)
    cifs_port = forms.IntegerField(label=_("SMB port"), min_value=1, max_value=65535, initial=445)
    cifs_share = _text(_("SMB share"), 80)
    cifs_path = _text(_("Folder on the share"), 300)
    cifs_username = _text(_("SMB user name"), 104)
    cifs_password = _text(
        _("SMB password"),
        1000,
        widget=forms.PasswordInput(render_value=False),
        help_text=_("Stored encrypted, never shown. Leave blank to keep the current one."),
    )
    cifs_domain = _text(_("SMB domain"), 104)
    nfs_path = _text(
        _("Mounted NFS path"),
        1000,
        help_text=_("Where the NFS export is mounted on the backup node, e.g. /mnt/backup."),
    )

    def action_fields(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        if data.get("cifs_port") is None:
            data["cifs_port"] = 445
        return data


class BackupTargetEditForm(BackupTargetForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.fields["customer"]
        del self.fields["kind"]


def _keep(label: Any, field: str) -> forms.IntegerField:
    return forms.IntegerField(
        label=label,
        min_value=0,
        max_value=MAX_KEEP[field],
        required=False,
        help_text=_("Empty: inherit. 0 turns this tier off."),
    )


class SnapshotPolicyForm(ActorForm):
    enabled = forms.NullBooleanField(
        label=_("Snapshots"),
        widget=forms.Select(
            choices=[("unknown", _("Inherit")), ("true", _("On")), ("false", _("Off"))]
        ),
        required=False,
    )
    hourly_keep = _keep(_("Hourly snapshots kept"), "hourly_keep")
    daily_keep = _keep(_("Daily snapshots kept"), "daily_keep")
    monthly_keep = _keep(_("Monthly snapshots kept"), "monthly_keep")
    manual_keep_days = forms.IntegerField(
        label=_("Days on-demand snapshots are kept"),
        min_value=0,
        max_value=MAX_KEEP["manual_keep_days"],
        required=False,
        help_text=_("Empty: inherit. 0 keeps them until deleted."),
    )
