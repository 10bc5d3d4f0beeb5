"""Jobs in the API: read-only, scoped like everything else."""

from __future__ import annotations

from rest_framework import serializers

from ums.api.viewsets import ScopedReadOnlyViewSet
from ums.models import Job


class JobSerializer(serializers.ModelSerializer):
    percent = serializers.IntegerField(read_only=True)

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
