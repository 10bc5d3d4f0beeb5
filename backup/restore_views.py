"""Portal pages of restores: a mailbox's snapshots (each with "Restore"), and the restore
form of a snapshot (what: the whole domain, a mailbox or one folder; how: into a new
folder or in place, the latter only with its confirmation), which starts the job and
shows its page with the progress bar."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from mail.models import Mailbox
from tenants import permissions as perms
from tenants.forms import ActorForm
from ums import scoping
from ums.models import Job
from ums.portal.generic import ObjectFormView, scoped_object_or_404

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

    def __init__(
        self,
        *args: Any,
        snapshot: Snapshot | None = None,
        folders: list[list[Any]] | None = None,
        domain_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["mailbox"]
        assert isinstance(field, forms.ModelChoiceField)
        if snapshot is not None:
            domain_id = snapshot.domain_id
        field.queryset = Mailbox.objects.filter(domain_id=domain_id).order_by("local_part")
        if folders:
            # Read from the snapshot by a job: chosen instead of typed (still validated).
            choices = [("", _("The whole mailbox"))] + [
                (name, f"{name} ({count})") for name, count in folders
            ]
            self.fields["folder"].widget = forms.Select(choices=choices)

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

    def folders_job(self) -> Job | None:
        """The folder listing named by ``?folders=``, if it is of this snapshot and in scope."""
        value = self.request.GET.get("folders", "")
        if not value.isdigit() or not 0 < int(value) < 2**63:
            return None
        jobs = scoping.scope_queryset(Job.objects.all(), self.request.user)
        return jobs.filter(
            pk=int(value), kind=restore.FOLDERS_JOB, params__snapshot_id=self.get_object().pk
        ).first()

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        kwargs["snapshot"] = self.get_object()
        job = self.folders_job()
        if job is not None and job.status == Job.SUCCEEDED:
            kwargs["folders"] = (job.result or {}).get("folders") or []
        return kwargs

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """The form's second button: read the chosen mailbox's folders (a job), then
        come back to the form with them."""
        if "list_folders" not in request.POST:
            return super().post(request, *args, **kwargs)
        snapshot = self.get_object()
        value = request.POST.get("mailbox", "")
        mailbox = scoped_object_or_404(Mailbox, request.user, value) if value.isdigit() else None
        url = reverse("backup:snapshot-restore", args=[snapshot.pk])
        if mailbox is None:
            messages.error(request, _("Choose a mailbox to read its folders."))
            return HttpResponseRedirect(url)
        try:
            job = restore.start_folder_listing(
                actor=request.user, snapshot=snapshot, mailbox=mailbox
            )
        except (ValidationError, PermissionDenied) as exc:
            for text in getattr(exc, "messages", None) or [str(exc)]:
                messages.error(request, text)
            return HttpResponseRedirect(f"{url}?mailbox={mailbox.pk}")
        return HttpResponseRedirect(f"{url}?mailbox={mailbox.pk}&folders={job.pk}")

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
        context["folders_job"] = self.folders_job()
        return context


__all__ = ["RestoreForm", "RestoreView"]
