"""Portal pages of replication: every domain in scope with its primary, replicas, lag and
running sync (progress), one domain's page with the failover and failback buttons."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy
from django.views import View, generic

from mail.models import Domain
from servers.models import Node
from tenants import permissions as perms
from tenants.models import Customer
from ums import scoping
from ums.models import Job
from ums.portal.generic import ObjectFormView
from ums.portal.views import PortalMixin, ScopedListView

from . import actions, policy, views_data
from .failover import FAILBACK_JOB, FAILOVER_JOB, SYNC_JOB
from .forms import VALUE_FIELDS, ReplicationPolicyForm
from .models import ReplicationPolicy


def _running_jobs(domain_ids: list[int]) -> dict[int, Job]:
    jobs: dict[int, Job] = {}
    for job in Job.objects.filter(
        kind__in=(SYNC_JOB, FAILOVER_JOB, FAILBACK_JOB),
        object_type="mail.domain",
        object_id__in=[str(i) for i in domain_ids],
        status__in=(Job.PENDING, Job.RUNNING),
    ).order_by("pk"):
        jobs[int(job.object_id)] = job
    return jobs


class ReplicationListView(ScopedListView):
    """Domains in scope with their replication (those placed on a node)."""

    template_name = "replication/list.html"
    model = Domain
    permission_required = perms.SERVERS_VIEW
    ordering = "name"

    def filter_queryset(self, queryset: Any) -> Any:
        return queryset.filter(placement__isnull=False)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        domains = list(context["object_list"])
        running = _running_jobs([d.pk for d in domains])
        context["rows"] = [
            (row, running.get(row.domain.pk))
            for row in views_data.domain_rows(domains, timezone.now())
        ]
        context["can_manage"] = self.request.user.has_permission(perms.SERVERS_MANAGE)
        return context


class ReplicationDomainView(PortalMixin, generic.TemplateView):
    template_name = "replication/domain.html"
    permission_required = perms.SERVERS_VIEW

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        domain = get_object_or_404(
            scoping.scope_queryset(Domain.objects.all(), self.request.user), pk=kwargs["pk"]
        )
        context.update(
            domain=domain,
            row=views_data.domain_row(domain, timezone.now()),
            job=_running_jobs([domain.pk]).get(domain.pk),
            can_manage=self.request.user.has_permission(perms.SERVERS_MANAGE),
        )
        return context


class _DomainJobButton(PortalMixin, View):
    """A POST button starting a job of a domain; shows the job (its progress bar)."""

    permission_required = perms.SERVERS_MANAGE

    def start(self, domain: Domain, node: Node | None) -> Job:
        raise NotImplementedError

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        domains = scoping.scope_queryset(Domain.objects.all(), request.user)
        domain = get_object_or_404(domains, pk=pk)
        raw = request.POST.get("node", "")
        nodes = scoping.scope_queryset(Node.objects.all(), request.user)
        node = nodes.filter(pk=int(raw)).first() if raw.isdigit() and len(raw) < 18 else None
        try:
            job = self.start(domain, node)
        except (ValidationError, PermissionDenied) as exc:
            for text in getattr(exc, "messages", None) or [str(exc)]:
                messages.error(request, text)
            return HttpResponseRedirect(reverse("replication:domain", args=[domain.pk]))
        return HttpResponseRedirect(reverse("portal:job-detail", args=[job.pk]))


class SyncNowView(_DomainJobButton):
    def start(self, domain: Domain, node: Node | None) -> Job:
        return actions.sync_now(actor=self.request.user, domain=domain)


class FailoverView(_DomainJobButton):
    def start(self, domain: Domain, node: Node | None) -> Job:
        return actions.start_failover(actor=self.request.user, domain=domain, node=node)


class FailbackView(_DomainJobButton):
    def start(self, domain: Domain, node: Node | None) -> Job:
        return actions.start_failback(actor=self.request.user, domain=domain, node=node)


class PolicyEditView(ObjectFormView):
    """A customer's replication policy: its own values, or inherit its parent's (the
    nearest customer with a policy of its own, up the tree; else the built-in defaults)."""

    template_name = "replication/policy_form.html"
    permission_required = perms.SERVERS_MANAGE
    form_class = ReplicationPolicyForm
    model = Customer
    title = gettext_lazy("Replication policy of %(name)s")
    success_message = gettext_lazy("Replication policy of %(name)s saved.")
    success_url_name, success_url_target = "replication:policy", "object"
    cancel_url_name, cancel_url_target = "replication:list", None

    def get_initial(self) -> dict[str, Any]:
        customer = self.get_object()
        own = policy.source_of(customer.path)
        own = own if own is not None and own.customer_id == customer.pk else None
        values = policy.effective(customer.path)
        return {"inherit": own is None, **{f: getattr(values, f) for f in VALUE_FIELDS}}

    def perform(self, form: Any) -> Any:
        customer = self.get_object()
        if form.cleaned_data.get("inherit"):
            actions.clear_policy(actor=self.request.user, customer=customer)
            return customer
        return actions.set_policy(
            actor=self.request.user, customer=customer, **form.action_fields()
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        customer = self.get_object()
        source = policy.source_of(customer.path)
        values = policy.effective(customer.path)
        context["effective"] = [
            (ReplicationPolicyForm.base_fields[f].label, _shown(values, f)) for f in VALUE_FIELDS
        ]
        context["source"] = source.customer if source is not None else None
        context["own"] = source is not None and source.customer_id == customer.pk
        return context

    @staticmethod
    def format_values(obj: Any) -> dict[str, Any]:
        return {"name": getattr(obj, "customer", obj), "email": ""}


def _shown(values: policy.Policy, field: str) -> Any:
    value = getattr(values, field)
    if field == "zone_rule":
        return dict(ReplicationPolicy.ZONE_RULES).get(value, value)
    if isinstance(value, bool):
        return gettext_lazy("Yes") if value else gettext_lazy("No")
    return value
