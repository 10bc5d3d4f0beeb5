"""API of controller dumps: ``/api/v1/backup/dumps/`` (the dumps each target's manifests
list, with size, time and checksum status), ``POST .../now/`` ("Dump now") and
``POST .../check/`` (re-read a target's dumps against their manifests).

Operators only (administrators of a top-level customer, see :mod:`backup.dumps_actions`):
anyone else gets 403 on every route, because a dump holds every customer's data.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from ums import scoping
from ums.api.jobs import JobSerializer
from ums.api.serializers import StrictSerializer
from ums.api.viewsets import ScopedReadOnlyViewSet

from . import dumps_actions
from .models import BackupTarget, Dump


class DumpSerializer(serializers.ModelSerializer):
    target_name = serializers.CharField(source="target.name", read_only=True)

    class Meta:
        model = Dump
        fields = [
            "id",
            "target",
            "target_name",
            "name",
            "created_at",
            "size_bytes",
            "object_count",
            "status",
            "status_message",
            "checked_at",
            "observed_at",
        ]
        read_only_fields = fields


class DumpCheckSerializer(StrictSerializer):
    target = serializers.IntegerField(min_value=1, max_value=2**63 - 1)


class DumpViewSet(ScopedReadOnlyViewSet):
    """Controller dumps per target, as their manifests were last read."""

    queryset = Dump.objects.select_related("target")
    serializer_class = DumpSerializer
    filterset_fields = ["target", "status"]
    permission_area = "servers"
    ordering = "-id"

    @staticmethod
    def listed_for(user: Any) -> bool:
        """Whether the API root names this collection for ``user`` (operators only)."""
        return dumps_actions.is_operator(user)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if not dumps_actions.is_operator(request.user):
            raise PermissionDenied(
                gettext("Controller dumps hold every customer's data: only operators may use them.")
            )

    @extend_schema(request=None, responses={202: JobSerializer})
    @action(detail=False, methods=["post"])
    def now(self, request: Request) -> Response:
        """Dump now: a job dumps the controller to every dump target."""
        job = dumps_actions.start_dump(actor=request.user)
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=DumpCheckSerializer, responses={202: JobSerializer})
    @action(detail=False, methods=["post"])
    def check(self, request: Request) -> Response:
        """Check dumps: a job reads every dump on the target back against its manifest."""
        serializer = DumpCheckSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        target = scoping.get_in_scope_or_404(
            BackupTarget.objects.select_related("customer"),
            request.user,
            pk=serializer.validated_data["target"],
        )
        job = dumps_actions.start_dump_check(actor=request.user, target=target)
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
