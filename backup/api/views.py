"""API of backups: targets (with "test connection"), snapshots (with "snapshot now") and
each customer's snapshot policy."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from mail.models import Domain, Mailbox
from tenants.models import Customer
from ums import scoping
from ums.api.jobs import JobSerializer
from ums.api.viewsets import ScopedModelViewSet, ScopedReadOnlyViewSet, ScopedViewSetMixin

from .. import actions
from ..models import BackupTarget, Snapshot, SnapshotPolicy
from ..policy import effective_policy
from . import serializers as s


class BackupTargetViewSet(ScopedModelViewSet):
    queryset = BackupTarget.objects.all()
    serializer_class = s.BackupTargetSerializer
    filterset_fields = ["customer", "kind"]
    permission_area = "servers"
    ordering = "id"

    def get_serializer_class(self) -> type:
        if self.action in {"update", "partial_update"}:
            return s.BackupTargetUpdateSerializer
        return super().get_serializer_class()

    def create_object(self, data: dict[str, Any]) -> BackupTarget:
        return actions.create_target(actor=self.request.user, **data)

    def update_object(self, instance: BackupTarget, data: dict[str, Any]) -> BackupTarget:
        return actions.update_target(actor=self.request.user, target=instance, **data)

    def delete_object(self, instance: BackupTarget) -> None:
        actions.delete_target(actor=self.request.user, target=instance)

    @extend_schema(request=None, responses={202: JobSerializer})
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Test connection: a job writes, reads back and deletes an encrypted probe."""
        job = actions.start_target_test(actor=request.user, target=self.get_object())
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class SnapshotViewSet(ScopedReadOnlyViewSet):
    """Snapshots as the IMAP nodes last reported them; ``?mailbox=ID`` lists the
    mailbox's domain's snapshots with the mailbox's Maildir path in each."""

    queryset = Snapshot.objects.select_related("node", "domain")
    serializer_class = s.SnapshotSerializer
    filterset_fields = ["domain", "node", "tier"]
    permission_area = "servers"
    http_method_names = ["get", "post", "delete", "head", "options"]
    ordering = "-taken_at"

    def _mailbox(self) -> Mailbox | None:
        value = self.request.query_params.get("mailbox")
        if value is None:
            return None
        if not value.isdigit() or not 0 < int(value) < 2**63:
            return None
        return (
            scoping.scope_queryset(Mailbox.objects.all(), self.request.user)
            .filter(pk=int(value))
            .first()
        )

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        if "mailbox" in self.request.query_params:
            mailbox = self._mailbox()
            if mailbox is None:
                return queryset.none()
            queryset = queryset.filter(domain_id=mailbox.domain_id)
        return queryset

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        if "mailbox" in self.request.query_params:
            mailbox = self._mailbox()
            if mailbox is not None:
                context["local_part"] = mailbox.local_part
        return context

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        # A page's exclusions in one query, not one per row.
        if args and isinstance(args[0], Snapshot | list):
            from ..exclusion_policy import for_domains

            rows = list(args[0]) if kwargs.get("many") else [args[0]]
            args = (rows if kwargs.get("many") else args[0], *args[1:])
            kwargs.setdefault("context", self.get_serializer_context())
            domains = {r.domain_id: r.domain for r in rows if r.domain_id}
            kwargs["context"]["exclusions"] = for_domains(domains.values())
        return super().get_serializer(*args, **kwargs)

    @extend_schema(
        parameters=[OpenApiParameter("mailbox", int)],
        responses=s.SnapshotSerializer(many=True),
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=s.SnapshotNowSerializer, responses={202: JobSerializer})
    @action(detail=False, methods=["post"])
    def now(self, request: Request) -> Response:
        """Snapshot now: a job takes an on-demand snapshot of the domain's dataset."""
        serializer = s.SnapshotNowSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        domain = scoping.get_in_scope_or_404(
            Domain.objects.select_related("customer"),
            request.user,
            pk=serializer.validated_data["domain"],
        )
        job = actions.snapshot_domain_now(actor=request.user, domain=domain)
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: JobSerializer})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        """Delete this snapshot on its node: 202 with the job (``snapshot.delete``);
        the row goes when the node no longer lists it."""
        from ..snapshot_delete import start_snapshot_delete

        job = start_snapshot_delete(actor=request.user, snapshot=self.get_object())
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class SnapshotPolicyViewSet(ScopedViewSetMixin, viewsets.GenericViewSet):
    """``/backup/snapshot-policies/<customer id>/``: own values and effective ones."""

    queryset = Customer.objects.all()
    serializer_class = s.SnapshotPolicySerializer
    permission_area = "servers"
    http_method_names = ["get", "patch", "head", "options"]

    def _describe(self, customer: Customer) -> dict[str, Any]:
        own = SnapshotPolicy.objects.filter(customer=customer).first()
        return s.SnapshotPolicySerializer.describe(customer, own, effective_policy(customer))

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(self._describe(self.get_object()))

    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        customer = self.get_object()
        serializer = s.SnapshotPolicySerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        actions.set_snapshot_policy(
            actor=request.user, customer=customer, **serializer.validated_data
        )
        return Response(self._describe(customer))
