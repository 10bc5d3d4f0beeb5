"""Portal pages of exclusion policies (Backups → Exclusions, and one form per customer,
domain and mailbox showing what is inherited and from where), a mailbox's snapshots
(with what is excluded) and per mail store settings (Backups → Mail stores)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import View

from mail.models import Domain, Mailbox
from servers.models import Node
from tenants import permissions as perms
from tenants.models import Customer
from ums import scoping
from ums.portal.generic import ObjectFormView, scoped_object_or_404
from ums.portal.views import PortalMixin, ScopedListView

from . import exclusion_policy as policy
from . import store_settings
from .api.exclusions import describe_customer, describe_domain, describe_mailbox
from .exclusion_actions import set_exclusion
from .exclusion_forms import ExclusionForm, MailboxExclusionForm, MailStoreSettingsForm
from .models import BackupExclusion, Snapshot
from .snapshot_run import snapshot_path


class ExclusionListView(ScopedListView):
    """Everything in scope that leaves something out of backups."""

    template_name = "backup/exclusion_list.html"
    model = BackupExclusion
    permission_required = perms.SERVERS_VIEW
    ordering = "id"

    def filter_queryset(self, queryset: Any) -> Any:
        return queryset.select_related("customer", "domain", "mailbox")

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["can_manage"] = self.request.user.has_permission(perms.SERVERS_MANAGE)
        return context


class _ExclusionFormView(ObjectFormView):
    template_name = "backup/exclusion_form.html"
    permission_required = perms.SERVERS_MANAGE
    form_class = ExclusionForm
    action = set_exclusion
    success_url_target = "object"
    cancel_url_name, cancel_url_target = "backup:exclusion-list", None
    success_message = gettext_lazy("Backup exclusions of %(name)s saved.")

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def get_initial(self) -> dict[str, Any]:
        own = policy.own(**{self.object_kwarg: self.get_object()})
        return {
            "excluded": bool(own and own.excluded),
            "folders": "\n".join(own.folders) if own else "",
        }

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["described"] = described = self.describe()
        effective = described["effective"]
        context["excluded_source"] = effective.get("excluded") or effective.get("domain")
        context["excluded_mailboxes"] = effective.get("mailboxes", [])
        return context


class CustomerExclusionView(_ExclusionFormView):
    model = Customer
    object_kwarg = "customer"
    title = gettext_lazy("Backup exclusions of %(name)s")
    success_url_name = "backup:exclusion-customer"

    def describe(self) -> dict[str, Any]:
        return describe_customer(self.get_object())


class DomainExclusionView(_ExclusionFormView):
    model = Domain
    select_related = ("customer",)
    object_kwarg = "domain"
    title = gettext_lazy("Backup exclusions of %(name)s")
    success_url_name = "backup:exclusion-domain"

    def describe(self) -> dict[str, Any]:
        return describe_domain(self.get_object())


class MailboxExclusionView(_ExclusionFormView):
    model = Mailbox
    select_related = ("domain",)
    form_class = MailboxExclusionForm
    object_kwarg = "mailbox"
    title = gettext_lazy("Backup exclusions of %(name)s")
    success_url_name = "backup:exclusion-mailbox"

    def describe(self) -> dict[str, Any]:
        return describe_mailbox(self.get_object())


class MailStoreListView(ScopedListView):
    """The IMAP nodes in scope with their mail store settings."""

    template_name = "backup/store_list.html"
    model = Node
    permission_required = perms.SERVERS_VIEW
    ordering = "hostname"

    def filter_queryset(self, queryset: Any) -> Any:
        return queryset.filter(roles__contains=["imap"])

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        nodes = list(context["object_list"])
        rows = {
            s.node_id: s for s in store_settings.MailStoreSettings.objects.filter(node__in=nodes)
        }
        context["rows"] = [(node, rows.get(node.pk)) for node in nodes]
        context["can_manage"] = self.request.user.has_permission(perms.SERVERS_MANAGE)
        return context


class MailStoreSettingsView(ObjectFormView):
    template_name = "backup/store_form.html"
    permission_required = perms.SERVERS_MANAGE
    form_class = MailStoreSettingsForm
    model = Node
    action, object_kwarg = store_settings.set_store_settings, "node"
    title = gettext_lazy("Mail store of %(name)s")
    success_message = gettext_lazy("Mail store settings of %(name)s saved.")
    success_url_name, success_url_target = "backup:store", "object"
    cancel_url_name, cancel_url_target = "backup:store-list", None

    def get_initial(self) -> dict[str, Any]:
        return dict(store_settings.describe(self.get_object())["own"])

    def get_form(self, form_class: Any = None) -> Any:
        form = super().get_form(form_class)
        choices = store_settings.compression_choices(self.get_object())
        form.fields["compression"].choices = [
            c for c in form.fields["compression"].choices if c[0] == "" or c[0] in choices
        ]
        return form

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["described"] = store_settings.describe(self.get_object())
        return context

    @staticmethod
    def format_values(obj: Any) -> dict[str, Any]:
        node = getattr(obj, "node", obj)
        return {"name": node.hostname, "email": ""}


class MailboxSnapshotsView(PortalMixin, View):
    """One mailbox's snapshots: its domain's, with the mailbox's Maildir path in each and
    whether backups leave the mailbox (or some of its folders) out."""

    permission_required = perms.SERVERS_VIEW

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        mailbox = scoped_object_or_404(Mailbox, request.user, pk, ("domain",))
        rows = list(
            Snapshot.objects.filter(domain_id=mailbox.domain_id)
            .select_related("node")
            .order_by("-taken_at")[:500]
        )
        found = policy.for_domains([mailbox.domain])[mailbox.domain_id]
        return render(
            request,
            "backup/mailbox_snapshots.html",
            {
                "mailbox": mailbox,
                "snapshots": [(s, snapshot_path(s, mailbox.local_part)) for s in rows],
                "excluded": policy.status(found, mailbox.local_part),
                "can_manage": request.user.has_permission(perms.SERVERS_MANAGE),
            },
        )


class MailboxLookupView(PortalMixin, View):
    """The domain snapshot page's "mailbox" box: to that mailbox's snapshots or exclusions."""

    permission_required = perms.SERVERS_VIEW

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        domain = scoped_object_or_404(Domain, request.user, pk)
        local_part = request.GET.get("local_part", "").strip().lower()
        mailbox = (
            scoping.scope_queryset(Mailbox.objects.all(), request.user)
            .filter(domain=domain, local_part__iexact=local_part[:64])
            .first()
        )
        if mailbox is None:
            messages.error(request, _("No mailbox %(name)s in this domain.") % {"name": local_part})
            return HttpResponseRedirect(reverse("backup:domain-snapshots", args=[domain.pk]))
        name = (
            "backup:exclusion-mailbox"
            if "exclusions" in request.GET
            else "backup:mailbox-snapshots"
        )
        return HttpResponseRedirect(reverse(name, args=[mailbox.pk]))
