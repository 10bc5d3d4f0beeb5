"""Portal pages of controller dumps (Backups → Dumps): the dumps each dump target holds,
"Dump now" and "Check dumps". Operators only, like the API (backup/dumps_api.py)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views import View

from tenants import permissions as perms
from ums import scoping
from ums.portal.generic import scoped_object_or_404
from ums.portal.views import PortalMixin

from . import dumps_actions
from .models import BackupTarget, Dump

#: Rows shown per target (retention keeps far fewer; a safety bound for the page).
MAX_ROWS = 200


class _OperatorMixin(PortalMixin):
    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated and not dumps_actions.is_operator(request.user):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)


class DumpListView(_OperatorMixin, View):
    permission_required = perms.SERVERS_VIEW

    def get(self, request: HttpRequest) -> HttpResponse:
        targets = list(
            scoping.scope_queryset(dumps_actions.dump_targets(), request.user).select_related(
                "customer"
            )
        )
        rows = Dump.objects.filter(target__in=targets).order_by("-created_at", "-id")
        by_target: dict[int, list[Dump]] = {t.pk: [] for t in targets}
        for dump in rows[: MAX_ROWS * max(1, len(targets))]:
            by_target[dump.target_id].append(dump)
        return render(
            request,
            "backup/dump_list.html",
            {
                "targets": [(t, by_target[t.pk][:MAX_ROWS]) for t in targets],
                "can_manage": request.user.has_permission(perms.SERVERS_MANAGE),
                "busy": dumps_actions.busy(),
            },
        )


def _job_or_back(request: HttpRequest, start: Any) -> HttpResponse:
    try:
        job = start()
    except (ValidationError, PermissionDenied) as exc:
        for text in getattr(exc, "messages", None) or [str(exc)]:
            messages.error(request, text)
        return HttpResponseRedirect(reverse("backup:dump-list"))
    return HttpResponseRedirect(reverse("portal:job-detail", args=[job.pk]))


class DumpNowView(_OperatorMixin, View):
    permission_required = perms.SERVERS_MANAGE

    def post(self, request: HttpRequest) -> HttpResponse:
        return _job_or_back(request, lambda: dumps_actions.start_dump(actor=request.user))


class DumpCheckView(_OperatorMixin, View):
    permission_required = perms.SERVERS_MANAGE

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        target = scoped_object_or_404(BackupTarget, request.user, pk)
        return _job_or_back(
            request, lambda: dumps_actions.start_dump_check(actor=request.user, target=target)
        )
