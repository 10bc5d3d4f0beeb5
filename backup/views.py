"""Portal pages of backups: targets (list, create, edit, delete, test), a domain's
snapshots with "Snapshot now", and a customer's snapshot policy."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext_lazy
from django.views import View

from mail.models import Domain
from servers.models import Node
from tenants import permissions as perms
from tenants.models import Customer
from ums.portal.generic import ObjectDeleteView, ObjectFormView, scoped_object_or_404
from ums.portal.views import PortalMixin, ScopedListView

from . import actions, exclusion_policy, store_settings
from .forms import BackupTargetEditForm, BackupTargetForm, SnapshotPolicyForm
from .models import BackupTarget, Snapshot, SnapshotPolicy
from .policy import effective_policy


class TargetListView(ScopedListView):
    template_name = "backup/target_list.html"
    model = BackupTarget
    permission_required = perms.SERVERS_VIEW
    ordering = "id"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["can_manage"] = self.request.user.has_permission(perms.SERVERS_MANAGE)
        return context


class TargetFormView(ObjectFormView):
    template_name = "backup/form.html"
    permission_required = perms.SERVERS_MANAGE
    success_url_name, success_url_target = "backup:target-list", None
    cancel_url_name, cancel_url_target = "backup:target-list", None


class TargetCreateView(TargetFormView):
    form_class = BackupTargetForm
    action = actions.create_target
    title = gettext_lazy("New backup target")
    success_message = gettext_lazy("Backup target %(name)s created.")


class TargetEditView(TargetFormView):
    form_class = BackupTargetEditForm
    model = BackupTarget
    action, object_kwarg = actions.update_target, "target"
    title = gettext_lazy("Backup target %(name)s")
    success_message = gettext_lazy("Backup target %(name)s saved.")
    initial_from_object = tuple(
        f for f in BackupTargetEditForm.base_fields if f not in actions.SECRET_FIELDS
    )


class TargetDeleteView(ObjectDeleteView):
    template_name = "backup/confirm.html"
    permission_required = perms.SERVERS_MANAGE
    model = BackupTarget
    action, object_kwarg = actions.delete_target, "target"
    success_message = gettext_lazy("Backup target %(name)s deleted.")
    success_url_name = "backup:target-list"
    cancel_url_name, cancel_url_target = "backup:target-list", None


class _JobButtonView(PortalMixin, View):
    """A POST button that starts a job through an action and shows the job."""

    permission_required = perms.SERVERS_MANAGE
    model: type = BackupTarget
    back = "backup:target-list"

    def start(self, obj: Any) -> Any:
        raise NotImplementedError

    def back_url(self, obj: Any) -> str:
        return reverse(self.back)

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        obj = scoped_object_or_404(self.model, request.user, pk)
        try:
            job = self.start(obj)
        except (ValidationError, PermissionDenied) as exc:
            for text in getattr(exc, "messages", None) or [str(exc)]:
                messages.error(request, text)
            return HttpResponseRedirect(self.back_url(obj))
        return HttpResponseRedirect(reverse("portal:job-detail", args=[job.pk]))


class TargetTestView(_JobButtonView):
    def start(self, obj: BackupTarget) -> Any:
        return actions.start_target_test(actor=self.request.user, target=obj)


class SnapshotNowView(_JobButtonView):
    model = Domain

    def start(self, obj: Domain) -> Any:
        return actions.snapshot_domain_now(actor=self.request.user, domain=obj)

    def back_url(self, obj: Domain) -> str:
        return reverse("backup:domain-snapshots", args=[obj.pk])


class SnapshotDeleteView(_JobButtonView):
    """Delete one snapshot: a confirmation page, then the job (``snapshot.delete``)."""

    model = Snapshot

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        from django.shortcuts import render

        from .snapshot_delete import copy_base

        snapshot = scoped_object_or_404(Snapshot, request.user, pk, ("node", "domain"))
        return render(
            request,
            "backup/snapshot_delete.html",
            {
                "snapshot": snapshot,
                "copy_base": copy_base(snapshot),
                "cancel": self.back_url(snapshot),
            },
        )

    def start(self, obj: Snapshot) -> Any:
        from .snapshot_delete import start_snapshot_delete

        return start_snapshot_delete(actor=self.request.user, snapshot=obj)

    def back_url(self, obj: Snapshot) -> str:
        if obj.domain_id is None:
            return reverse("backup:domain-list")
        return reverse("backup:domain-snapshots", args=[obj.domain_id])


class TierNowView(_JobButtonView):
    model = Node

    def start(self, obj: Node) -> Any:
        from .tiering import tier_now

        return tier_now(actor=self.request.user, node=obj)

    def back_url(self, obj: Node) -> str:
        return reverse("backup:store", args=[obj.pk])


class DomainListView(ScopedListView):
    """Every domain in scope with how many snapshots its node reported, and the newest."""

    template_name = "backup/domain_list.html"
    model = Domain
    permission_required = perms.SERVERS_VIEW
    ordering = "name"

    def filter_queryset(self, queryset: Any) -> Any:
        from django.db.models import Count, Max, OuterRef, Subquery

        snaps = Snapshot.objects.filter(domain=OuterRef("pk")).order_by().values("domain")
        return queryset.annotate(
            snapshot_count=Subquery(snaps.annotate(n=Count("id")).values("n")[:1]),
            newest_snapshot=Subquery(snaps.annotate(t=Max("taken_at")).values("t")[:1]),
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        excluded = exclusion_policy.for_domains(context["object_list"])  # one query
        context["rows"] = [(d, excluded[d.pk]) for d in context["object_list"]]
        return context


class DomainSnapshotsView(PortalMixin, View):
    """The snapshots the domain's IMAP node last reported, newest first."""

    permission_required = perms.SERVERS_VIEW

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        from django.shortcuts import render

        domain = scoped_object_or_404(Domain, request.user, pk, ("customer",))
        rows = list(
            Snapshot.objects.filter(domain=domain)
            .select_related("node")
            .order_by("-taken_at")[:500]
        )
        return render(
            request,
            "backup/domain_snapshots.html",
            {
                "domain": domain,
                "snapshots": rows,
                "policy": store_settings.effective_for_domain(domain),
                "exclusions": exclusion_policy.describe(domain),
                "can_manage": request.user.has_permission(perms.SERVERS_MANAGE),
                # Each mailbox's own snapshot page (restore of one mailbox or folder).
                "mailboxes": list(domain.mailboxes.order_by("local_part")[:200]),
                # Maildir archive copies on targets restore like snapshots.
                "archives": archive_rows(domain),
                # Every off-node copy with its last verification ("Verify copies").
                "copies": offnode_copies(domain),
            },
        )


def offnode_copies(domain: Domain) -> list[Any]:
    """The domain's off-node copies (backup node, target streams, archives), one query."""
    from .models_offnode import OffnodeCopy

    return list(
        OffnodeCopy.objects.filter(domain=domain)
        .select_related("backup_node", "target")
        .order_by("kind", "id")
    )


def archive_rows(domain: Domain) -> list[tuple[Any, str, bool]]:
    """``(copy, archived snapshot, is an increment)`` of each kept Maildir archive of
    ``domain``, newest first."""
    from .archive_restore import stamp
    from .models_offnode import OffnodeCopy

    copies = OffnodeCopy.objects.filter(domain=domain, kind=OffnodeCopy.ARCHIVE)
    rows = [
        (c, name, (c.archive_kinds or {}).get(name) == "incremental")
        for c in copies.select_related("target")
        for name in c.snapshots
    ]
    return sorted(rows, key=lambda row: stamp(row[1]), reverse=True)


class PolicyEditView(ObjectFormView):
    template_name = "backup/policy_form.html"
    permission_required = perms.SERVERS_MANAGE
    form_class = SnapshotPolicyForm
    model = Customer
    action, object_kwarg = actions.set_snapshot_policy, "customer"
    title = gettext_lazy("Snapshot policy of %(name)s")
    success_message = gettext_lazy("Snapshot policy of %(name)s saved.")
    success_url_name, success_url_target = "backup:policy", "object"
    cancel_url_name, cancel_url_target = "backup:target-list", None

    def get_initial(self) -> dict[str, Any]:
        own = SnapshotPolicy.objects.filter(customer=self.get_object()).first()
        fields = ("enabled", "hourly_keep", "daily_keep", "monthly_keep", "manual_keep_days")
        return {f: getattr(own, f, None) for f in fields}

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["inherited"] = effective_policy(self.get_object(), upto_parent=True)
        context["effective"] = effective_policy(self.get_object())
        return context

    def format_values(self, obj: Any) -> dict[str, Any]:
        return {"name": obj if not isinstance(obj, SnapshotPolicy) else obj.customer, "email": ""}


__all__ = [
    "DomainListView",
    "DomainSnapshotsView",
    "PolicyEditView",
    "SnapshotNowView",
    "TargetCreateView",
    "TargetDeleteView",
    "TargetEditView",
    "TargetListView",
    "TargetTestView",
]
