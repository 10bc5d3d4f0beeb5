"""Audit search and CSV export; an administrator sees their own subtree's records only."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.request import Request

from ums import csvsafe
from ums.api.viewsets import ScopedReadOnlyViewSet

from .. import search
from ..filtersets import AuditRecordFilterSet
from ..models import AuditRecord
from .serializers import AuditRecordSerializer

EXPORT_LIMIT = 100_000


class AuditRecordViewSet(ScopedReadOnlyViewSet):
    queryset = AuditRecord.objects.all()
    serializer_class = AuditRecordSerializer
    filterset_class = AuditRecordFilterSet
    permission_area = "audit"
    ordering = "-seq"

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=False, methods=["get"], url_path="export")
    def export(self, request: Request) -> Any:
        queryset = self.filter_queryset(self.get_queryset()).order_by("-seq")[:EXPORT_LIMIT]
        rows = (search.export_row(r) for r in queryset.iterator(chunk_size=2000))
        response = StreamingHttpResponse(
            csvsafe.stream_rows(search.EXPORT_HEADER, rows), content_type="text/csv"
        )
        response["Content-Disposition"] = 'attachment; filename="audit.csv"'
        return response
