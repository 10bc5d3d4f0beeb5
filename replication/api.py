"""API of replication: per domain its primary, fencing epoch and replicas with their lag
(``/api/v1/replication/domains/``, with ``sync-now``, ``failover`` and ``failback``
actions that start jobs), and the policies (``/api/v1/replication/policies/``)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from mail.models import Domain
from servers.models import Node
from tenants.models import Customer
from ums.api.fields import ScopedPrimaryKeyRelatedField
from ums.api.jobs import JobSerializer
from ums.api.serializers import StrictModelSerializer, StrictSerializer
from ums.api.viewsets import ScopedModelViewSet, ScopedReadOnlyViewSet

from . import actions, views_data
from .models import ReplicationPolicy


class ReplicaSerializer(serializers.Serializer):
    node = serializers.IntegerField()
    node_hostname = serializers.CharField()
    zone = serializers.CharField()
    state = serializers.CharField()
    last_snapshot = serializers.CharField()
    synced_at = serializers.DateTimeField(allow_null=True)
    lag_seconds = serializers.FloatField(allow_null=True)
    over_policy = serializers.BooleanField()
    bytes_sent = serializers.IntegerField()
    last_error = serializers.CharField()


class ReplicatedDomainSerializer(serializers.ModelSerializer):
    primary = serializers.SerializerMethodField()
    epoch = serializers.SerializerMethodField()
    replicas = serializers.SerializerMethodField()
    max_lag_seconds = serializers.SerializerMethodField()
    zones = serializers.SerializerMethodField()

    class Meta:
        model = Domain
        fields = ["id", "name", "primary", "epoch", "max_lag_seconds", "replicas", "zones"]

    def _row(self, domain: Domain) -> views_data.DomainRow:
        rows = self.context.setdefault("_rows", {})
        if domain.pk not in rows:
            rows[domain.pk] = views_data.domain_row(domain, timezone.now())
        return rows[domain.pk]

    def get_primary(self, domain: Domain) -> dict[str, Any] | None:
        row = self._row(domain)
        return {"id": row.primary.pk, "hostname": row.primary.hostname} if row.primary else None

    def get_epoch(self, domain: Domain) -> int:
        return self._row(domain).epoch

    def get_max_lag_seconds(self, domain: Domain) -> int:
        return self._row(domain).policy.max_lag_minutes * 60

    def get_zones(self, domain: Domain) -> dict[str, Any] | None:
        """On one domain only: the primary zone's mode (``hot-hot``/``hot-warm``), the MX
        records to publish (equal priority in HOT-HOT) and latency warnings (> 80 ms)."""
        view = self.context.get("view")
        if getattr(view, "action", None) != "retrieve":
            return None
        return self._row(domain).zones

    def get_replicas(self, domain: Domain) -> list[dict[str, Any]]:
        return [ReplicaSerializer(r).data for r in self._row(domain).replicas]


class SwitchSerializer(StrictSerializer):
    node = ScopedPrimaryKeyRelatedField(
        queryset=Node.objects.all(), required=False, allow_null=True, default=None
    )


class ReplicatedDomainViewSet(ScopedReadOnlyViewSet):
    """Domains with their primary, fencing epoch and replicas (lag in seconds: now minus
    the snapshot of the replica's last completed sync)."""

    queryset = Domain.objects.select_related("customer")
    serializer_class = ReplicatedDomainSerializer
    filterset_fields = ["customer"]
    permission_area = "servers"
    ordering = "name"

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # One set of queries for the whole page, not four per domain.
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        items = list(page if page is not None else queryset)
        rows = {r.domain.pk: r for r in views_data.domain_rows(items, timezone.now())}
        context = {**self.get_serializer_context(), "_rows": rows}
        data = self.get_serializer(items, many=True, context=context).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    def _job(self, job: Any) -> Response:
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: JobSerializer})
    @action(detail=True, methods=["post"], url_path="sync-now")
    def sync_now(self, request: Request, pk: str | None = None) -> Response:
        """Sync the domain's replicas now (a job)."""
        return self._job(actions.sync_now(actor=request.user, domain=self.get_object()))

    @extend_schema(request=SwitchSerializer, responses={202: JobSerializer})
    @action(detail=True, methods=["post"])
    def failover(self, request: Request, pk: str | None = None) -> Response:
        """Promote a replica (``node``, or the most recently synced) of a domain whose
        primary is offline; the job refuses while the primary answers."""
        domain = self.get_object()
        serializer = SwitchSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        return self._job(
            actions.start_failover(actor=request.user, domain=domain, **serializer.validated_data)
        )

    @extend_schema(request=SwitchSerializer, responses={202: JobSerializer})
    @action(detail=True, methods=["post"])
    def failback(self, request: Request, pk: str | None = None) -> Response:
        """Switch the domain to a replica while its primary is online (final sync first:
        nothing acknowledged is lost)."""
        domain = self.get_object()
        serializer = SwitchSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        return self._job(
            actions.start_failback(actor=request.user, domain=domain, **serializer.validated_data)
        )


class ReplicationPolicySerializer(StrictModelSerializer):
    customer = ScopedPrimaryKeyRelatedField(queryset=Customer.objects.all())

    class Meta:
        model = ReplicationPolicy
        fields = ["id", "customer", *ReplicationPolicy.audit_fields]


class ReplicationPolicyUpdateSerializer(ReplicationPolicySerializer):
    class Meta(ReplicationPolicySerializer.Meta):
        read_only_fields = ["customer"]


class ReplicationPolicyViewSet(ScopedModelViewSet):
    """Replication policy per customer (its sub-tree inherits it); POST creates or
    replaces a customer's; DELETE makes the customer inherit its parent's again."""

    queryset = ReplicationPolicy.objects.select_related("customer")
    serializer_class = ReplicationPolicySerializer
    filterset_fields = ["customer"]
    permission_area = "servers"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    ordering = "id"

    def get_serializer_class(self) -> type:
        if self.action in {"update", "partial_update"}:
            return ReplicationPolicyUpdateSerializer
        return super().get_serializer_class()

    def create_object(self, data: dict[str, Any]) -> ReplicationPolicy:
        return actions.set_policy(actor=self.request.user, **data)

    def update_object(self, instance: ReplicationPolicy, data: dict[str, Any]) -> ReplicationPolicy:
        return actions.set_policy(actor=self.request.user, customer=instance.customer, **data)

    def delete_object(self, instance: ReplicationPolicy) -> None:
        """The customer inherits its parent's policy again (as "Inherit" in the portal)."""
        actions.clear_policy(actor=self.request.user, customer=instance.customer)


router = SimpleRouter()
router.register("replication/domains", ReplicatedDomainViewSet, basename="replicateddomain")
router.register("replication/policies", ReplicationPolicyViewSet, basename="replicationpolicy")
urlpatterns = router.urls
