"""Portal forms of off-node copies: a node's copy setting, and "restore onto a new node"."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from servers.models import Node
from tenants.forms import ActorForm
from ums.portal.fields import ScopedModelChoiceField
from ums.validators import no_control_characters

from .models import BackupTarget
from .models_offnode import OffnodeCopy, OffnodeSetting


class OffnodeSettingForm(ActorForm):
    """Types the values; the action checks roles, scope and the dataset name."""

    enabled = forms.BooleanField(label=_("Copies enabled"), required=False, initial=True)
    backup_node = ScopedModelChoiceField(
        Node.objects.filter(roles__contains=["backup"]).order_by("hostname"),
        label=_("Backup node"),
        required=False,
        empty_label=_("None"),
        help_text=_("A node with the backup role and a ZFS pool; zfs send streams go there."),
    )
    backup_dataset = forms.CharField(
        label=_("Dataset on the backup node"),
        max_length=200,
        required=False,
        validators=[no_control_characters],
        help_text=_("Inside its pool, e.g. backup/ums-copies (created, not mounted)."),
    )
    target = ScopedModelChoiceField(
        BackupTarget.objects.order_by("name"),
        label=_("Backup target"),
        required=False,
        empty_label=_("None"),
        help_text=_("The same streams, encrypted, with a manifest per domain."),
    )
    target_format = forms.ChoiceField(
        label=_("What is stored on the target"),
        choices=OffnodeSetting.FORMATS,
        required=False,  # absent: streams, as before this choice existed
        initial=OffnodeSetting.STREAM,
        help_text=_(
            "Streams restore a lost node; Maildir archives (a full tar, then increments with "
            "only the new mail) leave out the mailboxes and folders excluded from backups."
        ),
    )
    interval_minutes = forms.IntegerField(
        label=_("Copy every (minutes)"), min_value=5, max_value=7 * 24 * 60, initial=60
    )
    target_full_every = forms.IntegerField(
        label=_("Incrementals before a new full copy on the target"),
        min_value=1,
        max_value=1000,
        initial=30,
    )
    target_keep_chains = forms.IntegerField(
        label=_("Full copies kept on the target"),
        min_value=1,
        max_value=100,
        initial=2,
        help_text=_("Full stream chains, or Maildir archive chains (each kept whole)."),
    )
    archive_full_every = forms.IntegerField(
        label=_("A full Maildir archive every (passes)"),
        min_value=1,
        max_value=100,
        initial=7,
        required=False,  # absent: the default, as before this choice existed
        help_text=_("Increments in between hold only new mail; 1: every archive is full."),
    )

    verify_every_days = forms.IntegerField(
        label=_("Verify the target's copies every (days)"),
        min_value=0,
        max_value=365,
        initial=7,
        required=False,  # absent: the default, as before this choice existed
        help_text=_(
            "Every object is downloaded, decrypted and checked against its manifest, so a "
            "damaged copy is found before it is needed; 0: only with Verify copies."
        ),
    )

    def clean_verify_every_days(self) -> int:
        value = self.cleaned_data.get("verify_every_days")
        return 7 if value is None else value

    def clean_archive_full_every(self) -> int:
        value = self.cleaned_data.get("archive_full_every")
        return 7 if value is None else value

    def clean_target_format(self) -> str:
        return self.cleaned_data.get("target_format") or OffnodeSetting.STREAM


class RebuildForm(ActorForm):
    new_node = ScopedModelChoiceField(
        Node.objects.filter(roles__contains=["imap"]).order_by("hostname"),
        label=_("New IMAP node"),
        help_text=_("Approved, with the mail store's ZFS pool, and without these domains."),
    )
    # Short choice labels (a select is as wide as its longest one, and long ones were
    # cut off at 1280 px); what each choice means is in the help text.
    prefer = forms.ChoiceField(
        label=_("Restore from"),
        required=False,
        choices=[
            ("", _("The best copy (automatic)")),
            (OffnodeCopy.TARGET, _("The target's streams")),
            (OffnodeCopy.ARCHIVE, _("The newest Maildir archive")),
        ],
        help_text=_(
            "Automatic: the backup node if it has a copy, else the target's streams, else "
            "its newest Maildir archive. An archive brings back no older snapshots and "
            "leaves out excluded mail."
        ),
    )

    def action_fields(self) -> dict[str, Any]:
        return {"new_node": self.cleaned_data["new_node"], "prefer": self.cleaned_data["prefer"]}
