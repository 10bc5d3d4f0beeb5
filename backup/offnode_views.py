"""Portal pages of off-node copies: every IMAP node's setting and copies, the setting form,
"Copy now", and "Restore onto a new node"."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from django.utils.translation import gettext_lazy

from mail.models import Domain
from servers.models import Node
from tenants import permissions as perms
from ums.portal.generic import ObjectFormView
from ums.portal.views import ScopedListView

from . import offnode_actions, offnode_verify_run
from .models_offnode import OffnodeCopy, OffnodeSetting
from .offnode_forms import OffnodeSettingForm, RebuildForm
from .views import _JobButtonView


class OffnodeListView(ScopedListView):
    """IMAP nodes in scope, where each is copied and what the copies hold."""

    template_name = "backup/offnode_list.html"
    model = Node
    permission_required = perms.SERVERS_VIEW
    ordering = "hostname"

    def filter_queryset(self, queryset: Any) -> Any:
        return queryset.filter(roles__contains=["imap"]).select_related(
            "offnode_setting__backup_node", "offnode_setting__target"
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["can_manage"] = self.request.user.has_permission(perms.SERVERS_MANAGE)
        nodes = [n.pk for n in context["object_list"]]
        copies: dict[int, list[OffnodeCopy]] = {}
        for copy in OffnodeCopy.objects.filter(source_node__in=nodes).select_related(
            "backup_node", "target"
        ):
            copies.setdefault(copy.source_node_id, []).append(copy)
        context["rows"] = [
            (node, getattr(node, "offnode_setting", None), copies.get(node.pk, []))
            for node in context["object_list"]
        ]
        return context


class OffnodeSettingView(ObjectFormView):
    template_name = "backup/offnode_form.html"
    permission_required = perms.SERVERS_MANAGE
    form_class = OffnodeSettingForm
    model = Node
    action, object_kwarg = offnode_actions.set_offnode_setting, "node"
    title = gettext_lazy("Off-node copies of %(name)s")
    success_message = gettext_lazy("Off-node copies of %(name)s saved.")
    success_url_name, success_url_target = "backup:offnode-list", None
    cancel_url_name, cancel_url_target = "backup:offnode-list", None

    def get_initial(self) -> dict[str, Any]:
        own = OffnodeSetting.objects.filter(node=self.get_object()).first()
        if own is None:
            return {}
        return {f: getattr(own, f) for f in OffnodeSetting.audit_fields}

    def format_values(self, obj: Any) -> dict[str, Any]:
        node = obj.node if isinstance(obj, OffnodeSetting) else obj
        return {"name": node, "email": ""}


class OffnodeCopyNowView(_JobButtonView):
    model = Node

    def start(self, obj: Node) -> Any:
        return offnode_actions.start_offnode_copy(actor=self.request.user, node=obj)

    def back_url(self, obj: Node) -> str:
        return reverse("backup:offnode-list")


class OffnodeVerifyView(_JobButtonView):
    """ "Verify copies": the node's copies on targets read back now (a job)."""

    model = Node

    def start(self, obj: Node) -> Any:
        return offnode_verify_run.start_verify(actor=self.request.user, node=obj)

    def back_url(self, obj: Node) -> str:
        return reverse("backup:offnode-list")


class DomainVerifyView(_JobButtonView):
    """ "Verify copies" on a domain's snapshot page: its off-node copies read back now."""

    model = Domain

    def start(self, obj: Any) -> Any:
        return offnode_verify_run.start_verify_domain(actor=self.request.user, domain=obj)

    def back_url(self, obj: Any) -> str:
        return reverse("backup:domain-snapshots", args=[obj.pk])


class RebuildView(ObjectFormView):
    """ "Restore onto a new node": the lost node is the page's object."""

    template_name = "backup/offnode_rebuild.html"
    permission_required = perms.SERVERS_MANAGE
    form_class = RebuildForm
    model = Node
    action, object_kwarg = offnode_actions.start_rebuild, "node"
    title = gettext_lazy("Restore %(name)s onto a new node")
    submit_label = gettext_lazy("Restore onto the new node")
    success_message = gettext_lazy("Restore of %(name)s started.")
    success_url_name, success_url_target = "portal:job-detail", "result"
    cancel_url_name, cancel_url_target = "backup:offnode-list", None

    def format_values(self, obj: Any) -> dict[str, Any]:
        return {"name": self.get_object(), "email": ""}

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        from deploy.models import DomainPlacement

        context = super().get_context_data(**kwargs)
        names = DomainPlacement.objects.filter(node=self.get_object()).values_list(
            "domain__name", flat=True
        )
        # What the job would use by default: a stream copy, else the newest archive.
        rank = {OffnodeCopy.NODE: 0, OffnodeCopy.TARGET: 1, OffnodeCopy.ARCHIVE: 2}
        found = sorted(
            OffnodeCopy.objects.filter(domain_name__in=names).select_related("target"),
            key=lambda c: rank.get(c.kind, 3),
            reverse=True,
        )
        copies = {c.domain_name: c for c in found}
        context["domains"] = [(name, copies.get(name)) for name in sorted(names)]
        return context
