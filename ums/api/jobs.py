"""Jobs in the API: read-only, scoped like everything else.

The log is rendered in the request's language (``Accept-Language``) line by line, as the
portal shows it; the stored log keeps its language-neutral lines (see :mod:`ums.joblog`).
"""

from __future__ import annotations

from rest_framework import serializers

from ums.api.viewsets import ScopedReadOnlyViewSet
from ums.joblog import translate_log
from ums.models import Job


class TranslatedLogField(serializers.CharField):
    """A job log in the active language (LocaleMiddleware set it from the request)."""

    def to_representation(self, value: str) -> str:
        return translate_log(value or "")


class JobSerializer(serializers.ModelSerializer):
    percent = serializers.IntegerField(read_only=True)
    log = TranslatedLogField(read_only=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "title",
            "status",
            "percent",
            "progress_done",
            "progress_total",
            "customer_id",
            "requested_by_id",
            "requested_by_name",
            "request_id",
            "object_type",
            "object_id",
            "params",
            "result",
            "log",
            "error",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class JobViewSet(ScopedReadOnlyViewSet):
    """Every administrator sees the jobs of their subtree (progress, log, result)."""

    queryset = Job.objects.all()
    serializer_class = JobSerializer
    filterset_fields = ["status", "kind", "object_type", "object_id"]
    required_permissions = {"list": None, "retrieve": None}
    ordering = "-id"
