"""Portal pages: the servers dashboard, node pages with charts and actions, zones."""

from __future__ import annotations

import datetime
from typing import Any

from django.apps import apps
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import View

from deploy import actions as deploy_actions
from deploy import capacity as deploy_capacity
from tenants import permissions as perms
from ums import scoping
from ums.models import Job
from ums.operators import is_operator
from ums.portal.generic import ObjectFormView
from ums.portal.views import PortalMixin, ScopedListView, apply_validation_error

from . import actions, sizing
from .choices import LATENCY_WARNING_MS, NodeStatus
from .forms import NodeForm, ServiceForm, ZoneEditForm, ZoneForm
from .models import MetricSample, Node, NodeAlert, Zone, ZoneLatency


def configured_users(user: Any) -> int:
    """Mailboxes configured in the administrator's subtree (0 until mail is installed)."""
    try:
        mailbox = apps.get_model("mail", "Mailbox")
    except LookupError:
        return 0
    return scoping.scope_queryset(mailbox.objects.all(), user).count()


class DashboardView(PortalMixin, View):
    permission_required = perms.SERVERS_VIEW

    def get(self, request: HttpRequest) -> HttpResponse:
        nodes = list(
            scoping.scope_queryset(Node.objects.select_related("zone"), request.user)
            .exclude(status=NodeStatus.DECOMMISSIONED)
            .order_by("hostname")[:500]
        )
        latest = {}
        if nodes:
            since = timezone.now() - datetime.timedelta(hours=1)
            for sample in MetricSample.objects.filter(
                node__in=nodes, resolution=MetricSample.RAW, at__gte=since
            ).order_by("node_id", "at"):
                latest[sample.node_id] = sample
        for node in nodes:
            node.latest = latest.get(node.pk)
            root = [d for d in (node.latest.disks if node.latest else []) if d["mount"] == "/"]
            node.root_disk = root[0] if root else None
        alerts = scoping.scope_queryset(
            NodeAlert.objects.filter(resolved_at=None).select_related("node"), request.user
        )[:50]
        latencies = scoping.scope_queryset(
            ZoneLatency.objects.select_related("from_zone", "to_zone"), request.user
        ).order_by("from_zone__name", "to_zone__name")[:200]
        users = configured_users(request.user)
        capacity, unplaced = deploy_capacity.for_user(request.user)
        return render(
            request,
            "servers/dashboard.html",
            {
                "pending": [n for n in nodes if n.status == NodeStatus.PENDING],
                "nodes": [n for n in nodes if n.status != NodeStatus.PENDING],
                "alerts": alerts,
                "latencies": latencies,
                "latency_warning_ms": LATENCY_WARNING_MS,
                "sizing": sizing.for_users(users),
                "guideline": sizing.GUIDELINE,
                "capacity": capacity,
                "is_operator": is_operator(request.user),
                "unplaced_users": unplaced,
                "can_manage": request.user.has_permission(perms.SERVERS_MANAGE),
            },
        )


def _node_or_404(request: HttpRequest, pk: int) -> Node:
    return get_object_or_404(
        scoping.scope_queryset(Node.objects.select_related("zone"), request.user), pk=pk
    )


class NodeDetailView(PortalMixin, View):
    permission_required = perms.SERVERS_VIEW

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        node = _node_or_404(request, pk)
        now = timezone.now()
        day = MetricSample.objects.filter(
            node=node, resolution=MetricSample.RAW, at__gte=now - datetime.timedelta(hours=24)
        ).order_by("at")
        week = MetricSample.objects.filter(
            node=node, resolution=MetricSample.HOURLY, at__gte=now - datetime.timedelta(days=7)
        ).order_by("at")
        day = list(day[:1500])
        from deploy.connector.keys import fingerprint_sha256

        form = NodeForm(
            actor=request.user,
            initial={
                "zone": node.zone_id,
                "roles": node.roles,
                "ssh_port": node.ssh_port,
                "storage_service": node.storage_service,
            },
        )
        return render(
            request,
            "servers/node_detail.html",
            {
                "node": node,
                "day": day,
                "week": list(week[:300]),
                "latest": day[-1] if day else None,
                "fingerprints": [fingerprint_sha256(k) for k in node.pinned_host_keys],
                "reported_fingerprints": [fingerprint_sha256(k) for k in node.reported_host_keys],
                "alerts": node.alerts.filter(resolved_at=None),
                "jobs": Job.objects.filter(object_type="servers.node", object_id=str(node.pk))[:10],
                "form": form,
                "service_form": ServiceForm(),
                "node_actions": deploy_actions.actions_for(node),
                "can_manage": request.user.has_permission(perms.SERVERS_MANAGE),
                "is_operator": is_operator(request.user),
            },
        )


class NodeEditView(ObjectFormView):
    template_name = "servers/node_form.html"
    form_class = NodeForm
    permission_required = perms.SERVERS_MANAGE
    model, select_related = Node, ("zone",)
    action, object_kwarg = actions.update_node, "node"
    initial_from_object = (
        "roles",
        "ssh_port",
        "storage_service",
        "disk_iops_capacity",
        "network_mbit_capacity",
    )
    success_message = gettext_lazy("Node saved.")
    success_url_name, success_url_target = "servers:node-detail", "object"

    def get_initial(self) -> dict[str, Any]:
        return {**super().get_initial(), "zone": self.get_object().zone_id}

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "node": self.get_object()}


class NodeApproveView(PortalMixin, View):
    permission_required = perms.SERVERS_MANAGE

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        node = _node_or_404(request, pk)
        try:
            actions.approve_node(actor=request.user, node=node)
        except (ValidationError, PermissionDenied) as exc:
            messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
        else:
            messages.success(request, _("Node approved; its host key is pinned."))
        return redirect("servers:node-detail", pk=node.pk)


class NodeActionView(PortalMixin, View):
    """POST-only buttons (each confirmed in the page); the work runs as a job."""

    permission_required = perms.SERVERS_MANAGE

    def post(self, request: HttpRequest, pk: int, name: str) -> HttpResponse:
        node = _node_or_404(request, pk)
        service = None
        if name == "restart_service":
            form = ServiceForm(request.POST)
            if not form.is_valid():
                messages.error(request, " ".join(form.errors.get("service", [])))
                return redirect("servers:node-detail", pk=node.pk)
            service = form.cleaned_data["service"]
        try:
            job = deploy_actions.start_node_action(
                actor=request.user, node=node, name=name, service=service
            )
        except (ValidationError, PermissionDenied) as exc:
            messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
            return redirect("servers:node-detail", pk=node.pk)
        return HttpResponseRedirect(reverse("portal:job-detail", args=[job.pk]))


class ZoneListView(ScopedListView):
    template_name = "servers/zone_list.html"
    model = Zone
    permission_required = perms.SERVERS_VIEW
    ordering = "id"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["can_manage"] = self.request.user.has_permission(perms.SERVERS_MANAGE)
        context["latency_warning_ms"] = LATENCY_WARNING_MS
        return context


class ZoneCreateView(ObjectFormView):
    template_name = "servers/zone_form.html"
    form_class = ZoneForm
    permission_required = perms.SERVERS_MANAGE
    action = actions.create_zone
    success_message = gettext_lazy("Zone created.")
    success_url_name, success_url_target = "servers:zone-list", None


class ZoneEditView(ObjectFormView):
    template_name = "servers/zone_form.html"
    form_class = ZoneEditForm
    permission_required = perms.SERVERS_MANAGE
    model = Zone
    action, object_kwarg = actions.update_zone, "zone"
    initial_from_object = ("name", "location", "site_kind", "redundancy", "notes")
    success_message = gettext_lazy("Zone saved.")
    success_url_name, success_url_target = "servers:zone-list", None

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "zone": self.get_object()}


class ZoneDeleteView(PortalMixin, View):
    permission_required = perms.SERVERS_MANAGE

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        zone = get_object_or_404(scoping.scope_queryset(Zone.objects.all(), request.user), pk=pk)
        try:
            actions.delete_zone(actor=request.user, zone=zone)
        except ValidationError as exc:
            form = ZoneEditForm(actor=request.user)
            apply_validation_error(form, exc)
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, _("Zone deleted."))
        return redirect("servers:zone-list")
