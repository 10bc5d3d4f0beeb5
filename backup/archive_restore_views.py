"""Portal page of a restore from a Maildir archive copy: the same choices as a restore
from a snapshot (the whole domain, a mailbox or one folder; into a new folder or in
place, the latter only with its confirmation) plus which kept archive, then the job page
with its progress bar. Reached from the domain's snapshot page, where snapshot restores
start."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models.functions import Lower
from django.http import Http404
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext_lazy as _

from tenants import permissions as perms
from ums.portal.generic import ObjectFormView

from . import archive_restore, restore, snapshots
from .models_offnode import OffnodeCopy
from .restore_views import RestoreForm


def archive_choices(copy: OffnodeCopy, names: list[str]) -> list[tuple[str, str]]:
    """Each archive labelled "full" or "increment of <date of its chain's full archive>"
    (an increment is restored with its chain: the date says which full it builds on).
    Chains are kept whole and in order, so an increment's full archive is the newest full
    one before it. Archives from before kinds were recorded keep their bare name."""
    kinds = copy.archive_kinds or {}
    full_before: dict[str, str] = {}
    last_full = ""
    for name in sorted(names, key=archive_restore.stamp):
        if kinds.get(name) == "full":
            last_full = name
        full_before[name] = last_full
    choices = []
    for name in names:
        kind = kinds.get(name)
        if kind == "full":
            label = _("%(name)s (full)") % {"name": name}
        elif kind == "incremental":
            base = full_before.get(name, "")
            when = snapshots.taken_at(base) if base else None
            label = _("%(name)s (increment of %(date)s)") % {
                "name": name,
                "date": date_format(timezone.localtime(when), "SHORT_DATETIME_FORMAT")
                if when
                else base or _("an older archive"),
            }
        else:
            label = name
        choices.append((name, str(label)))
    return choices


class ArchiveRestoreForm(RestoreForm):
    snapshot = forms.ChoiceField(label=_("Archive"), required=False)

    field_order = ["snapshot", "mailbox", "folder", "mode", "confirm"]

    def __init__(self, *args: Any, copy: OffnodeCopy, **kwargs: Any) -> None:
        super().__init__(*args, domain_id=copy.domain_id, **kwargs)
        self.archive_folders: list[str] = []
        names = sorted(copy.snapshots, key=archive_restore.stamp, reverse=True)
        self.fields["snapshot"].choices = archive_choices(copy, names)  # newest first
        self._offer_members(copy, names)
        self.fields["mode"].choices = [
            (restore.NEW_FOLDER, restore.MODES[restore.NEW_FOLDER]),
            (
                restore.IN_PLACE,
                _(
                    "In place: copy back messages missing from the folder and reset the "
                    "flags of messages present in both to the archive's"
                ),
            ),
        ]
        self.fields["confirm"].label = _(
            "I understand that in place restores overwrite the flags (read, answered, "
            "flagged, deleted) of messages in these folders with the archive's, and copy "
            "back the messages deleted since. Mail received since is kept."
        )

    def _offer_members(self, copy: OffnodeCopy, names: list[str]) -> None:
        """Mailboxes limited to those the kept archives hold, and the folders they hold
        offered in a datalist (typing stays possible; the action checks the choice
        against the archive of the chosen snapshot)."""
        held = [archive_restore.folders_held(copy, name) for name in names]
        known = [h for h in held if h is not None]
        if not known:
            return  # archives written before folders were recorded: typed, unchecked
        if len(known) == len(held):  # an older archive may hold mailboxes not recorded
            boxes = set().union(*known)
            field = self.fields["mailbox"]
            assert isinstance(field, forms.ModelChoiceField)
            # The archive keeps local parts as they were on the node; compare in lower case.
            queryset = field.queryset.annotate(key=Lower("local_part"))
            field.queryset = queryset.filter(key__in=boxes)
        self.archive_folders = sorted({f for h in known for fs in h.values() for f in fs})
        self.fields["folder"].widget.attrs["list"] = "archive-folders"
        self.fields["folder"].help_text = _(
            "Empty: the whole mailbox. INBOX for the inbox alone, or one of the folders the "
            "archives hold (offered as you type; with its subfolders). It is checked against "
            "the archive chosen above."
        )

    def action_fields(self) -> dict[str, Any]:
        return {**super().action_fields(), "snapshot": self.cleaned_data.get("snapshot") or ""}


class ArchiveRestoreView(ObjectFormView):
    template_name = "backup/archive_restore_form.html"
    permission_required = perms.SERVERS_MANAGE
    form_class = ArchiveRestoreForm
    model = OffnodeCopy
    select_related = ("target", "domain")
    action, object_kwarg = archive_restore.start_archive_restore, "copy"
    title = _("Restore %(name)s from a Maildir archive")
    submit_label = _("Restore")
    success_message = _("Restore started.")
    success_url_name, success_url_target = "portal:job-detail", "result"
    cancel_url_name, cancel_url_target = "backup:domain-snapshots", "object.domain_id"

    @staticmethod
    def format_values(obj: Any) -> dict[str, Any]:
        return {"name": getattr(obj, "domain_name", obj), "email": ""}

    def get_object(self) -> Any:
        copy = super().get_object()
        # Only archives of a domain that still exists can be restored from here.
        if copy.kind != OffnodeCopy.ARCHIVE or copy.domain_id is None:
            raise Http404
        return copy

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        kwargs["copy"] = self.get_object()
        return kwargs

    def get_initial(self) -> dict[str, Any]:
        initial = super().get_initial()
        for key in ("mailbox", "snapshot"):
            value = self.request.GET.get(key, "")
            if value and len(value) <= 100:
                initial[key] = int(value) if key == "mailbox" and value.isdigit() else value
        return initial

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        copy = self.get_object()
        context["copy"] = copy
        return context


__all__ = ["ArchiveRestoreForm", "ArchiveRestoreView"]
