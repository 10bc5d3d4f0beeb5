"""API endpoints for zones, nodes (with node actions), alerts and metrics."""

from __future__ import annotations

import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from deploy import actions as deploy_actions
from deploy import capacity as deploy_capacity
from deploy.connector.keys import InvalidKeyError, normalize_public_key
from ums.api.jobs import JobSerializer
from ums.api.viewsets import ScopedModelViewSet, ScopedReadOnlyViewSet, ScopedViewSetMixin

from .. import actions
from ..models import MetricSample, Node, NodeAlert, Zone
from . import serializers as s

METRIC_RANGES = {
    "24h": (datetime.timedelta(hours=24), MetricSample.RAW),
    "7d": (datetime.timedelta(days=7), MetricSample.HOURLY),
    "30d": (datetime.timedelta(days=30), MetricSample.HOURLY),
}


class ZoneViewSet(ScopedModelViewSet):
    queryset = Zone.objects.prefetch_related("latencies_from__to_zone")
    serializer_class = s.ZoneSerializer
    filterset_fields = ["customer", "site_kind", "redundancy"]
    permission_area = "servers"
    ordering = "id"

    def get_serializer_class(self) -> type:
        if self.action in {"update", "partial_update"}:
            return s.ZoneUpdateSerializer
        return super().get_serializer_class()

    def create_object(self, data: dict[str, Any]) -> Zone:
        return actions.create_zone(actor=self.request.user, **data)

    def update_object(self, instance: Zone, data: dict[str, Any]) -> Zone:
        return actions.update_zone(actor=self.request.user, zone=instance, **data)

    def delete_object(self, instance: Zone) -> None:
        actions.delete_zone(actor=self.request.user, zone=instance)

    @extend_schema(responses=s.ZoneCapacitySerializer(many=True))
    @action(detail=False, methods=["get"])
    def capacity(self, request: Request) -> Response:
        """Each zone in scope: users against the sizing guideline ×3, declared node
        capacity and measured load (24 h p95), and what the zone needs."""
        zones, _unplaced = deploy_capacity.for_user(request.user)
        return Response(s.ZoneCapacitySerializer(zones, many=True).data)


class NodeViewSet(
    ScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Nodes join through bootstrapcore.sh; here they are approved, changed and acted on."""

    queryset = Node.objects.select_related("zone")
    serializer_class = s.NodeSerializer
    filterset_fields = ["status", "zone", "customer"]
    permission_area = "servers"
    ordering = "id"
    http_method_names = ["get", "post", "patch", "head", "options"]

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = actions.update_node(
            actor=self.request.user, node=serializer.instance, **serializer.validated_data
        )

    @extend_schema(request=None, responses=s.NodeSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str | None = None) -> Response:
        node = actions.approve_node(actor=request.user, node=self.get_object())
        return Response(s.NodeSerializer(node).data)

    @extend_schema(request=s.NodeActionSerializer, responses={202: JobSerializer})
    @action(detail=True, methods=["post"], url_path="actions")
    def node_action(self, request: Request, pk: str | None = None) -> Response:
        node = self.get_object()
        serializer = s.NodeActionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = deploy_actions.start_node_action(
            actor=request.user,
            node=node,
            name=serializer.validated_data["action"],
            service=serializer.validated_data.get("service"),
        )
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request={
            "application/json": {"type": "object", "properties": {"dryRun": {"type": "boolean"}}}
        },
        responses={202: JobSerializer},
    )
    @action(detail=True, methods=["post"])
    def converge(self, request: Request, pk: str | None = None) -> Response:
        """Converge the node now, or with ``{"dryRun": true}`` only report the diff."""
        node = self.get_object()
        data = request.data if hasattr(request.data, "get") else {}
        # The camelCase parser hands "dryRun" over as "dry_run".
        dry_run = data.get("dry_run", data.get("dryRun", False))
        if not isinstance(dry_run, bool):
            raise ValidationError({"dryRun": gettext("Must be true or false.")})
        job = deploy_actions.start_node_action(
            actor=request.user,
            node=node,
            name="converge_dry_run" if dry_run else "converge",
        )
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=s.AcceptHostKeySerializer, responses=s.NodeSerializer)
    @action(detail=True, methods=["post"], url_path="accept-host-key")
    def accept_host_key(self, request: Request, pk: str | None = None) -> Response:
        node = self.get_object()
        serializer = s.AcceptHostKeySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            key = normalize_public_key(serializer.validated_data["host_key"])
        except InvalidKeyError as exc:
            raise ValidationError({"host_key": str(exc)}) from exc
        node = actions.accept_new_host_key(actor=request.user, node=node, host_key=key)
        return Response(s.NodeSerializer(node).data)

    @extend_schema(
        parameters=[OpenApiParameter("range", str, enum=list(METRIC_RANGES))],
        responses=s.MetricSampleSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def metrics(self, request: Request, pk: str | None = None) -> Response:
        node = self.get_object()
        span = request.query_params.get("range", "24h")
        if span not in METRIC_RANGES:
            raise ValidationError({"range": f"Choose one of {', '.join(METRIC_RANGES)}."})
        delta, resolution = METRIC_RANGES[span]
        samples = MetricSample.objects.filter(
            node=node, resolution=resolution, at__gte=timezone.now() - delta
        ).order_by("at")[:2000]
        return Response(s.MetricSampleSerializer(samples, many=True).data)


class NodeAlertViewSet(ScopedReadOnlyViewSet):
    queryset = NodeAlert.objects.select_related("node")
    serializer_class = s.NodeAlertSerializer
    filterset_fields = ["node", "kind"]
    permission_area = "servers"
    ordering = "-id"
