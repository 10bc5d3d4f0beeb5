"""Portal page of the cloud database: each zone's primary, epoch and members with their
measured lag, and the failover button (a job)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views import View

from replication import policy as repl_policy
from servers.models import Node
from tenants import permissions as perms
from ums import scoping
from ums.portal.views import PortalMixin, ScopedListView

from . import actions
from .models import CloudDbCluster, CloudDbMember


class CloudDbListView(ScopedListView):
    template_name = "clouddb/list.html"
    queryset = CloudDbCluster.objects.select_related("zone", "primary").prefetch_related(
        Prefetch("members", queryset=CloudDbMember.objects.select_related("node"))
    )
    permission_required = perms.SERVERS_VIEW
    ordering = "id"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        table = repl_policy.policies_by_path()
        context["rows"] = [
            (c, repl_policy.effective(c.customer_path, table).max_lag_minutes * 60)
            for c in context["object_list"]
        ]
        context["can_manage"] = self.request.user.has_permission(perms.SERVERS_MANAGE)
        return context


class CloudDbFailoverView(PortalMixin, View):
    permission_required = perms.SERVERS_MANAGE

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        clusters = scoping.scope_queryset(CloudDbCluster.objects.all(), request.user)
        cluster = get_object_or_404(clusters, pk=pk)
        raw = request.POST.get("node", "")
        nodes = scoping.scope_queryset(Node.objects.all(), request.user)
        node = nodes.filter(pk=int(raw)).first() if raw.isdigit() and len(raw) < 18 else None
        try:
            job = actions.start_failover(actor=request.user, cluster=cluster, node=node)
        except (ValidationError, PermissionDenied) as exc:
            for text in getattr(exc, "messages", None) or [str(exc)]:
                messages.error(request, text)
            return HttpResponseRedirect(reverse("clouddb:list"))
        return HttpResponseRedirect(reverse("portal:job-detail", args=[job.pk]))
