"""Portal pages of usage: the report of a customer's usage and the open quota warnings."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views import generic

from tenants.models import Administrator, Customer
from tenants.permissions import CUSTOMERS_VIEW, MAIL_VIEW
from ums import scoping
from ums.portal.views import PortalMixin, ScopedListView

from . import actions, params, report
from .api import csv_response
from .models import MonthlyReportRecipient, QuotaWarning
from .snapshot import NOT_BUILT


class UsageReportView(PortalMixin, generic.TemplateView):
    """``/usage/?customer=&from=&to=&group=``: the table; ``&download=csv``: the CSV."""

    template_name = "usage/report.html"
    permission_required = CUSTOMERS_VIEW

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.errors: dict[str, list[str]] = {}
        self.found: params.ReportParams | None = None
        self.lines: list[report.Line] = []
        try:
            self.found = params.parse(request.GET, request.user)
        except ValidationError as exc:
            self.errors = exc.message_dict
        self.chart_figure = request.GET.get("chart") or report.CHART_DEFAULT
        if self.chart_figure not in report.SHOWN:
            self.errors.setdefault("chart", []).append(_("Choose one of the figures of the table."))
            self.chart_figure = report.CHART_DEFAULT
        if self.found is not None:
            self.lines = report.build(
                self.found.customer, self.found.start, self.found.end, self.found.group
            )
            if request.GET.get("download") == "csv":
                return csv_response(self.found, self.lines)
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        found = self.found
        context.update(
            errors=self.errors,
            found=found,
            lines=self.lines,
            query=self.request.GET,
            not_built=NOT_BUILT,
            children=found is not None and found.group == report.CHILD,
            csv_query=self.request.GET.urlencode(),
            columns=list(report.SHOWN.values()),
            bars=report.chart(self.lines, self.chart_figure),
            chart_figure=self.chart_figure,
            chart_label=report.SHOWN[self.chart_figure],
            figures=list(report.SHOWN.items()),
            rows=[
                {
                    "line": line,
                    "cells": [
                        (report.display(n, line.average[n]), report.display(n, line.peak[n]))
                        for n in report.SHOWN
                    ],
                }
                for line in self.lines
            ],
        )
        if found is not None:
            context["children_of"] = found.customer.children.order_by("name")[:200]
            context["recipients"] = scoping.scope_queryset(
                MonthlyReportRecipient.objects.filter(customer=found.customer), self.request.user
            ).select_related("administrator")
            context["candidates"] = actions.candidates(self.request.user, found.customer)
        return context


class MonthlyRecipientAddView(PortalMixin, generic.View):
    """POST ``customer`` and ``administrator``: mail that customer's report monthly."""

    permission_required = CUSTOMERS_VIEW

    def post(self, request: HttpRequest) -> HttpResponse:
        customer = scoping.get_in_scope_or_404(
            Customer.objects.all(), request.user, pk=_id(request.POST.get("customer"))
        )
        back = f"{reverse('usage:report')}?customer={customer.pk}"
        administrator = Administrator.objects.filter(
            pk=_id(request.POST.get("administrator"))
        ).first()
        if administrator is None:
            messages.error(request, _("Choose an administrator."))
            return redirect(back)
        try:
            actions.add_monthly_recipient(
                actor=request.user, customer=customer, administrator=administrator
            )
        except ValidationError as exc:
            for text in exc.messages:
                messages.error(request, text)
            return redirect(back)
        messages.success(
            request,
            _("%(name)s will get this report by mail each month.")
            % {"name": administrator.full_name or administrator.username},
        )
        return redirect(back)


class MonthlyRecipientRemoveView(PortalMixin, generic.View):
    permission_required = CUSTOMERS_VIEW

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        recipient = scoping.get_in_scope_or_404(
            MonthlyReportRecipient.objects.select_related("customer", "administrator"),
            request.user,
            pk=pk,
        )
        customer_id = recipient.customer_id
        actions.remove_monthly_recipient(actor=request.user, recipient=recipient)
        messages.success(request, _("The monthly report is no longer mailed to them."))
        return redirect(f"{reverse('usage:report')}?customer={customer_id}")


def _id(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


class QuotaWarningListView(ScopedListView):
    template_name = "usage/quota_warnings.html"
    permission_required = MAIL_VIEW
    model = QuotaWarning
    ordering = "-id"

    def filter_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        return queryset.filter(is_open=True).select_related("mailbox", "customer")
