"""Portal pages of restores: a mailbox's snapshots (each with "Restore"), and the restore
form of a snapshot (what: the whole domain, a mailbox or one folder; how: into a new
folder or in place, the latter only with its confirmation), which starts the job and
shows its page with the progress bar."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _
from django.views import View

from mail.models import Mailbox
from tenants import permissions as perms
from tenants.forms import ActorForm
from ums.portal.generic import ObjectFormView, scoped_object_or_404
from ums.portal.views import PortalMixin

from . import restore
from .models import Snapshot


class RestoreForm(ActorForm):
    mailbox = forms.ModelChoiceField(
        label=_("What"),
        queryset=Mailbox.objects.none(),
        required=False,
        empty_label=_("The whole domain (every mailbox)"),
    )
    folder = forms.CharField(
        label=_("Folder"),
        required=False,
        max_length=restore.MAX_FOLDER,
        help_text=_(
            "Empty: the whole mailbox. INBOX for the inbox alone, or a folder such as "
            "Sent or Archive.2025 (with its subfolders)."
        ),
    )
    mode = forms.ChoiceField(
        label=_("How"),
        choices=list(restore.MODES.items()),
        initial=restore.NEW_FOLDER,
        widget=forms.RadioSelect,
    )
    confirm = forms.BooleanField(
        label=_(
            "I understand that in place restores overwrite the flags (read, answered, "
            "flagged, deleted) of messages in these folders with the snapshot's, and copy "
            "back the messages deleted since. Mail received since is kept."
        ),
        required=False,
    )

    def __init__(self, *args: Any, snapshot: Snapshot, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["mailbox"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = Mailbox.objects.filter(domain_id=snapshot.domain_id).order_by("local_part")

    def clean_folder(self) -> str | None:
        try:
            return restore.clean_folder(self.cleaned_data.get("folder"))
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from exc

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("mode") == restore.IN_PLACE and not data.get("confirm"):
            self.add_error(
                "confirm", _("Confirm the in-place restore, or restore into a new folder.")
            )
        if data.get("folder") is not None and not data.get("mailbox") and "folder" in data:
            self.add_error("folder", _("A folder is restored from one mailbox."))
        return data

    def action_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {"mailbox": data.get("mailbox"), "folder": data.get("folder"), "mode": data["mode"]}


class RestoreView(ObjectFormView):
    template_name = "backup/restore_form.html"
    permission_required = perms.SERVERS_MANAGE
    form_class = RestoreForm
    model = Snapshot
    select_related = ("domain", "node")
    action, object_kwarg = restore.start_restore, "snapshot"
    title = _("Restore from snapshot %(name)s")
    submit_label = _("Restore")
    success_message = _("Restore started.")
    success_url_name, success_url_target = "portal:job-detail", "result"
    cancel_url_name, cancel_url_target = "backup:domain-snapshots", "object.domain_id"

    @staticmethod
    def format_values(obj: Any) -> dict[str, Any]:
        return {"name": getattr(obj, "name", obj), "email": ""}

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        kwargs["snapshot"] = self.get_object()
        return kwargs

    def get_initial(self) -> dict[str, Any]:
        initial = super().get_initial()
        value = self.request.GET.get("mailbox", "")
        if value.isdigit():
            initial["mailbox"] = int(value)
        return initial

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        snapshot = self.get_object()
        context["snapshot"] = snapshot
        context["restored_name"] = f"Restored {restore.restored_date(snapshot).isoformat()}"
        return context


class MailboxSnapshotsView(PortalMixin, View):
    """The snapshots holding a mailbox (its domain's), each with "Restore"."""

    permission_required = perms.SERVERS_VIEW

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        mailbox = scoped_object_or_404(Mailbox, request.user, pk, ("domain",))
        rows = list(
            Snapshot.objects.filter(domain_id=mailbox.domain_id)
            .select_related("node")
            .order_by("-taken_at")[:500]
        )
        return render(
            request,
            "backup/mailbox_snapshots.html",
            {
                "mailbox": mailbox,
                "snapshots": rows,
                "can_manage": request.user.has_permission(perms.SERVERS_MANAGE),
            },
        )


__all__ = ["MailboxSnapshotsView", "RestoreForm", "RestoreView"]
