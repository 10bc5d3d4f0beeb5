"""Portal pages of Maildir exports: Backups → Exports (list with download links), the
export form (reached from a mailbox or a domain), and the signed download link.

The link is signed and time-limited (``UMS_EXPORT_LINK_TTL``), and still needs a logged-in
administrator with the content permission in scope: a leaked link alone opens nothing.
An expired link answers 410 and deletes the file if the cleanup has not yet.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseGone, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.views import View

from mail.models import Domain, Mailbox
from tenants import permissions as perms
from ums import scoping
from ums.portal.views import PortalMixin, ScopedListView

from . import crypto
from . import export as export_mod
from .models import BackupTarget, Export, Snapshot

ONE_OF_MESSAGE = _("Give either a mailbox or a domain.")


def download_url(export: Export) -> str:
    return reverse("backup:export-download", args=[export_mod.download_token(export)])


def serve(request: HttpRequest, export: Export) -> HttpResponse:
    """Stream the decrypted tar of a controller export, audited; 410 once expired."""
    user = request.user
    if not (
        user.has_permission(perms.MAIL_VIEW) and user.has_permission(export_mod.CONTENT_PERMISSION)
    ):
        raise PermissionDenied
    if not scoping.in_scope(export, user) or export.target_id or not export.file_name:
        raise Http404
    if export.status == Export.EXPIRED or export_mod.is_expired(export):
        export_mod.expire(export)
        return HttpResponseGone(_("This download link has expired."))
    if export.status != Export.READY:
        raise Http404
    path = export_mod.file_path(export)
    if not path.exists():
        raise Http404
    export_mod.record_download(export, user)

    def chunks() -> Any:
        with path.open("rb") as handle:
            yield from crypto.decrypt_stream(iter(lambda: handle.read(1024 * 1024), b""))

    response = StreamingHttpResponse(chunks(), content_type="application/x-tar")
    name = f"{export.local_part + '@' if export.local_part else ''}{export.domain_name}.tar"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Content-Length"] = str(export.size_bytes)
    response["X-Checksum-SHA256"] = export.sha256
    return response


class ExportListView(ScopedListView):
    template_name = "backup/export_list.html"
    model = Export
    queryset = Export.objects.select_related("target", "job")
    permission_required = perms.MAIL_VIEW
    ordering = "-id"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        for export in context.get("object_list", []):
            if export_mod.can_download(export, user):
                export.download_link = download_url(export)
        hours = export_mod.link_ttl() / 3600
        context["ttl_hours"] = int(hours) if hours == int(hours) else round(hours, 1)
        return context


class ExportForm(forms.Form):
    snapshot = forms.ModelChoiceField(
        queryset=Snapshot.objects.none(),
        required=False,
        label=_("From snapshot"),
        empty_label=_("The live Maildir (now)"),
    )
    target = forms.ModelChoiceField(
        queryset=BackupTarget.objects.none(),
        required=False,
        label=_("Write to"),
        empty_label=_("The controller, for a download link"),
    )

    def __init__(self, *args: Any, domain: Domain, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["snapshot"].queryset = Snapshot.objects.filter(domain=domain)
        self.fields["target"].queryset = scoping.scope_queryset(BackupTarget.objects.all(), user)


class ExportCreateView(PortalMixin, View):
    """``?mailbox=ID`` or ``?domain=ID``: what to export, from when, to where."""

    permission_required = export_mod.CONTENT_PERMISSION

    def _subject(self, request: HttpRequest) -> tuple[Domain, Mailbox | None]:
        for key, model in (("mailbox", Mailbox), ("domain", Domain)):
            value = request.GET.get(key, "")
            if value.isdigit() and 0 < int(value) < 2**63:
                obj = scoping.scope_queryset(model.objects.all(), request.user).filter(
                    pk=int(value)
                )
                found = obj.first()
                if found is None:
                    raise Http404
                return (found.domain, found) if key == "mailbox" else (found, None)
        raise Http404

    def _render(self, request: HttpRequest, form: ExportForm, domain: Domain, mailbox: Any) -> Any:
        return render(
            request,
            "backup/export_form.html",
            {"form": form, "domain": domain, "mailbox": mailbox},
        )

    def get(self, request: HttpRequest) -> HttpResponse:
        domain, mailbox = self._subject(request)
        return self._render(request, ExportForm(domain=domain, user=request.user), domain, mailbox)

    def post(self, request: HttpRequest) -> HttpResponse:
        domain, mailbox = self._subject(request)
        form = ExportForm(request.POST, domain=domain, user=request.user)
        if not form.is_valid():
            return self._render(request, form, domain, mailbox)
        try:
            export = export_mod.request_export(
                actor=request.user,
                domain=domain,
                mailbox=mailbox,
                snapshot=form.cleaned_data["snapshot"],
                target=form.cleaned_data["target"],
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
            return self._render(request, form, domain, mailbox)
        messages.success(
            request,
            _("Export of %(what)s started; the download link appears under Exports.")
            % {"what": str(export)},
        )
        return HttpResponseRedirect(reverse("portal:job-detail", args=[export.job_id]))


class ExportDownloadView(PortalMixin, View):
    permission_required = export_mod.CONTENT_PERMISSION

    def get(self, request: HttpRequest, signed: str) -> HttpResponse:
        export, expired = export_mod.export_for_token(signed)
        if export is None:
            raise Http404
        if expired:
            if scoping.in_scope(export, request.user):
                export_mod.expire(export)
            return HttpResponseGone(_("This download link has expired."))
        return serve(request, export)
