"""API of Maildir exports: request one (202 with its job), list, read, download.

``POST /api/v1/backup/exports/`` with ``{"mailbox": id}`` or ``{"domain": id}``, and
optionally ``"snapshot": id`` (export that snapshot instead of the live Maildir) and
``"target": id`` (write to that backup target instead of the controller).
``GET .../exports/<id>/download/`` streams the decrypted tar of a controller export
until its link expires (410 after).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from mail.models import Domain, Mailbox
from tenants import permissions as perms
from ums import scoping
from ums.api.jobs import JobSerializer
from ums.api.serializers import StrictSerializer
from ums.api.viewsets import ScopedViewSetMixin

from .. import export as export_mod
from .. import export_views
from ..models import BackupTarget, Export, Snapshot

_ID = {"min_value": 1, "max_value": 2**63 - 1}


class ExportSerializer(serializers.ModelSerializer):
    target_name = serializers.CharField(source="target.name", read_only=True, default=None)
    job = JobSerializer(read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Export
        fields = [
            "id",
            "domain",
            "domain_name",
            "local_part",
            "snapshot_name",
            "target",
            "target_name",
            "object_name",
            "status",
            "size_bytes",
            "sha256",
            "error",
            "requested_by_name",
            "created_at",
            "finished_at",
            "expires_at",
            "download_url",
            "job",
        ]
        read_only_fields = fields

    def get_download_url(self, obj: Export) -> str | None:
        request = self.context.get("request")
        if request is None or not export_mod.can_download(obj, request.user):
            return None
        return request.build_absolute_uri(export_views.download_url(obj))


class ExportRequestSerializer(StrictSerializer):
    domain = serializers.IntegerField(required=False, **_ID)
    mailbox = serializers.IntegerField(required=False, **_ID)
    snapshot = serializers.IntegerField(required=False, **_ID)
    target = serializers.IntegerField(required=False, **_ID)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("domain" in attrs) == ("mailbox" in attrs):
            raise serializers.ValidationError(
                {"mailbox": [export_views.ONE_OF_MESSAGE], "domain": [export_views.ONE_OF_MESSAGE]}
            )
        return attrs


class ExportViewSet(
    ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    queryset = Export.objects.select_related("target", "job")
    serializer_class = ExportSerializer
    filterset_fields = ["domain", "status", "target"]
    required_permissions = {
        "list": perms.MAIL_VIEW,
        "retrieve": perms.MAIL_VIEW,
        "create": export_mod.CONTENT_PERMISSION,
        "download": export_mod.CONTENT_PERMISSION,
    }
    ordering = "-created_at"

    def _get(self, model: type, pk: int, related: tuple[str, ...] = ()) -> Any:
        return scoping.get_in_scope_or_404(
            model.objects.select_related(*related), self.request.user, pk=pk
        )

    @extend_schema(request=ExportRequestSerializer, responses={202: ExportSerializer})
    def create(self, request: Request) -> Response:
        """Start a Maildir export job (needs the content permission)."""
        serializer = ExportRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        mailbox = self._get(Mailbox, data["mailbox"], ("domain",)) if "mailbox" in data else None
        domain = mailbox.domain if mailbox else self._get(Domain, data["domain"], ("customer",))
        export = export_mod.request_export(
            actor=request.user,
            domain=domain,
            mailbox=mailbox,
            snapshot=self._get(Snapshot, data["snapshot"]) if "snapshot" in data else None,
            target=self._get(BackupTarget, data["target"]) if "target" in data else None,
        )
        export.refresh_from_db()
        return Response(
            ExportSerializer(export, context=self.get_serializer_context()).data,
            status=status.HTTP_202_ACCEPTED,
        )

    @extend_schema(responses={(200, "application/x-tar"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request: Request, pk: str | None = None) -> HttpResponse:
        """The tar of a controller export (decrypted on the fly); 410 once expired."""
        return export_views.serve(request, self.get_object())
