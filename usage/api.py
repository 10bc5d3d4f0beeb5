"""``GET /api/v1/usage/`` (a usage report as JSON) and ``GET /api/v1/usage/csv/`` (the same
as CSV): ``?customer=ID&from=YYYY-MM-DD&to=YYYY-MM-DD&group=child|day``.

``customers.view`` needed; a customer outside the caller's scope is 404. Defaults: the
caller's home customer, this month so far, by child customer.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.models import Administrator, Customer
from tenants.permissions import CUSTOMERS_VIEW
from ums import csvsafe
from ums.api.fields import ScopedPrimaryKeyRelatedField
from ums.api.filters import IdFilter
from ums.api.serializers import StrictModelSerializer
from ums.api.viewsets import ScopedCreateListViewSet

from . import actions, params, report
from .models import FIGURES, MonthlyReportRecipient
from .snapshot import NOT_BUILT

PARAMETERS = [
    OpenApiParameter("customer", OpenApiTypes.INT, description="default: your home customer"),
    OpenApiParameter("from", OpenApiTypes.DATE, description="default: the first of this month"),
    OpenApiParameter("to", OpenApiTypes.DATE, description="default: today"),
    OpenApiParameter("group", OpenApiTypes.STR, enum=list(report.GROUPS)),
]


def report_data(query: Any, user: Any) -> tuple[params.ReportParams, list[report.Line]]:
    found = params.parse(query, user)
    return found, report.build(found.customer, found.start, found.end, found.group)


class UsageReportView(APIView):
    """A customer's usage over a period, per day or per child customer (from daily
    snapshots; ``quota_mb`` in MB, ``used_bytes`` and ``files_bytes`` in bytes).
    ``files_bytes``: space used in cloud files (Nextcloud), measured on the cloud files
    nodes; ``files_users``: mailboxes with an enabled cloud files account; ``chat_users``:
    users the last sync of each team chat organisation left. ``not_built`` lists figures
    that are not measured yet (none now)."""

    required_permissions = {"GET": CUSTOMERS_VIEW}

    @extend_schema(parameters=PARAMETERS, responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        found, lines = report_data(request.query_params, request.user)
        return Response(
            {
                "customer": {"id": found.customer.pk, "name": found.customer.name},
                "from": found.start,
                "to": found.end,
                "group": found.group,
                "figures": list(FIGURES),
                "not_built": list(NOT_BUILT),
                "lines": [vars(line) for line in lines],
            }
        )


class UsageReportCsvView(APIView):
    """The same report as CSV (one line per day or per child customer)."""

    required_permissions = {"GET": CUSTOMERS_VIEW}

    @extend_schema(parameters=PARAMETERS, responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request) -> StreamingHttpResponse:
        found, lines = report_data(request.query_params, request.user)
        return csv_response(found, lines)


def csv_response(found: params.ReportParams, lines: list[report.Line]) -> StreamingHttpResponse:
    rows = report.csv_rows(lines, found.group)
    response = StreamingHttpResponse(
        csvsafe.stream_rows(report.csv_header(found.group), rows),
        content_type="text/csv; charset=utf-8",
    )
    name = f"usage-{found.customer.pk}-{found.start}-{found.end}-{found.group}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


class MonthlyRecipientSerializer(StrictModelSerializer):
    customer = ScopedPrimaryKeyRelatedField(queryset=Customer.objects.all())
    administrator = ScopedPrimaryKeyRelatedField(queryset=Administrator.objects.all())
    administrator_username = serializers.CharField(source="administrator.username", read_only=True)

    class Meta:
        model = MonthlyReportRecipient
        fields = [
            "id",
            "customer",
            "administrator",
            "administrator_username",
            "last_sent_month",
            "created_at",
        ]
        read_only_fields = ["id", "last_sent_month", "created_at"]


class MonthlyRecipientFilterSet(django_filters.FilterSet):
    customer = IdFilter(field_name="customer_id")

    class Meta:
        model = MonthlyReportRecipient
        fields = ["customer"]


class MonthlyRecipientViewSet(ScopedCreateListViewSet):
    """Who gets a customer's usage report (by child customer) by mail on the first of each
    month. Only administrators who can see the customer's usage can be chosen; adding and
    removing are audited. ``customers.view`` needed, as for the report itself."""

    queryset = MonthlyReportRecipient.objects.select_related("administrator")
    serializer_class = MonthlyRecipientSerializer
    filterset_class = MonthlyRecipientFilterSet
    required_permissions = {
        "list": CUSTOMERS_VIEW,
        "retrieve": CUSTOMERS_VIEW,
        "create": CUSTOMERS_VIEW,
        "destroy": CUSTOMERS_VIEW,
    }
    ordering = "id"

    def create_object(self, data: dict[str, Any]) -> MonthlyReportRecipient:
        return actions.add_monthly_recipient(actor=self.request.user, **data)

    def delete_object(self, instance: MonthlyReportRecipient) -> None:
        actions.remove_monthly_recipient(actor=self.request.user, recipient=instance)
