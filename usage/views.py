"""Portal pages of usage: the report of a customer's usage and the open quota warnings."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.views import generic

from tenants.permissions import CUSTOMERS_VIEW, MAIL_VIEW
from ums.portal.views import PortalMixin, ScopedListView

from . import params, report
from .api import csv_response
from .models import QuotaWarning
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
            bars=report.chart(self.lines),
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
        return context


class QuotaWarningListView(ScopedListView):
    template_name = "usage/quota_warnings.html"
    permission_required = MAIL_VIEW
    model = QuotaWarning
    ordering = "-id"

    def filter_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        return queryset.filter(is_open=True).select_related("mailbox", "customer")
