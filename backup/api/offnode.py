"""API of off-node copies: each IMAP node's copy setting (with "copy now"), the copies
that exist, and "restore onto a new node"."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from mail.models import Mailbox
from servers.models import Node
from ums.api.fields import SafeCharField, ScopedPrimaryKeyRelatedField
from ums.api.jobs import JobSerializer
from ums.api.serializers import StrictModelSerializer, StrictSerializer
from ums.api.viewsets import ScopedModelViewSet, ScopedReadOnlyViewSet

from .. import archive_restore, offnode_actions, offnode_verify_run, restore
from ..models import BackupTarget
from ..models_offnode import OffnodeCopy, OffnodeSetting


class OffnodeSettingSerializer(StrictModelSerializer):
    node = ScopedPrimaryKeyRelatedField(queryset=Node.objects.all())
    backup_node = ScopedPrimaryKeyRelatedField(
        queryset=Node.objects.all(), required=False, allow_null=True
    )
    target = ScopedPrimaryKeyRelatedField(
        queryset=BackupTarget.objects.all(), required=False, allow_null=True
    )
    backup_dataset = SafeCharField(max_length=200, required=False, allow_blank=True)
    node_hostname = serializers.CharField(source="node.hostname", read_only=True)

    class Meta:
        model = OffnodeSetting
        fields = [
            "id",
            "node",
            "node_hostname",
            "enabled",
            "backup_node",
            "backup_dataset",
            "target",
            "interval_minutes",
            "target_full_every",
            "target_keep_chains",
            "target_format",
            "archive_full_every",
            "verify_every_days",
            "last_run_at",
            "last_ok",
            "last_message",
        ]
        read_only_fields = ["last_run_at", "last_ok", "last_message"]


class OffnodeSettingUpdateSerializer(OffnodeSettingSerializer):
    class Meta(OffnodeSettingSerializer.Meta):
        read_only_fields = ["node", "last_run_at", "last_ok", "last_message"]


class RebuildSerializer(StrictSerializer):
    node = ScopedPrimaryKeyRelatedField(queryset=Node.objects.all())
    new_node = ScopedPrimaryKeyRelatedField(queryset=Node.objects.all())
    prefer = serializers.ChoiceField(
        choices=["", OffnodeCopy.NODE, OffnodeCopy.TARGET, OffnodeCopy.ARCHIVE],
        required=False,
        default="",
    )


class ArchiveRestoreSerializer(StrictSerializer):
    """``mailbox`` (id; null or left out: the whole domain), ``folder`` (a Maildir++ name
    as for snapshot restores; null: the whole mailbox), ``mode`` (``new_folder``, the
    default, or ``in_place``), ``snapshot`` (the archived snapshot; empty: the newest)."""

    mailbox = ScopedPrimaryKeyRelatedField(
        queryset=Mailbox.objects.select_related("domain"), allow_null=True, required=False
    )
    snapshot = SafeCharField(max_length=100, required=False, allow_blank=True, default="")
    folder = SafeCharField(
        allow_null=True, required=False, allow_blank=True, max_length=restore.MAX_FOLDER
    )
    mode = serializers.ChoiceField(choices=list(restore.MODES), default=restore.NEW_FOLDER)

    def validate_folder(self, value: str | None) -> str | None:
        try:
            return restore.clean_folder(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from exc

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("folder") is not None and attrs.get("mailbox") is None:
            raise serializers.ValidationError(
                {"folder": [gettext("A folder is restored from one mailbox.")]}
            )
        return attrs


class OffnodeCopySerializer(StrictModelSerializer):
    backup_node_hostname = serializers.CharField(
        source="backup_node.hostname", read_only=True, default=None
    )
    target_name = serializers.CharField(source="target.name", read_only=True, default=None)

    class Meta:
        model = OffnodeCopy
        fields = [
            "id",
            "domain",
            "domain_name",
            "kind",
            "source_node",
            "backup_node",
            "backup_node_hostname",
            "target",
            "target_name",
            "location",
            "snapshots",
            "last_snapshot",
            "bytes_sent",
            "left_out",
            "archive_kinds",
            "copied_at",
            "verified_at",
            "verify_ok",
            "verify_message",
        ]


class OffnodeSettingViewSet(ScopedModelViewSet):
    """Where each IMAP node's mail store is copied; POST creates or replaces a node's."""

    queryset = OffnodeSetting.objects.select_related("node")
    serializer_class = OffnodeSettingSerializer
    filterset_fields = ["node", "backup_node", "target"]
    permission_area = "servers"
    http_method_names = ["get", "post", "patch", "head", "options"]
    ordering = "id"

    def get_serializer_class(self) -> type:
        if self.action in {"update", "partial_update"}:
            return OffnodeSettingUpdateSerializer
        return super().get_serializer_class()

    def create_object(self, data: dict[str, Any]) -> OffnodeSetting:
        return offnode_actions.set_offnode_setting(actor=self.request.user, **data)

    def update_object(self, instance: OffnodeSetting, data: dict[str, Any]) -> OffnodeSetting:
        return offnode_actions.set_offnode_setting(
            actor=self.request.user, node=instance.node, **data
        )

    @extend_schema(request=None, responses={202: JobSerializer})
    @action(detail=True, methods=["post"], url_path="copy-now")
    def copy_now(self, request: Request, pk: str | None = None) -> Response:
        """One off-node copy pass of the node now (a job)."""
        job = offnode_actions.start_offnode_copy(actor=request.user, node=self.get_object().node)
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: JobSerializer})
    @action(detail=True, methods=["post"])
    def verify(self, request: Request, pk: str | None = None) -> Response:
        """Verify every copy of the node on a backup target now (a job): each object
        downloaded, decrypted and checked against its manifest; nothing written."""
        job = offnode_verify_run.start_verify(actor=request.user, node=self.get_object().node)
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=RebuildSerializer, responses={202: JobSerializer})
    @action(detail=False, methods=["post"])
    def rebuild(self, request: Request) -> Response:
        """Restore a lost IMAP node's domains onto a new IMAP node from their copies."""
        serializer = RebuildSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        job = offnode_actions.start_rebuild(actor=request.user, **serializer.validated_data)
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class OffnodeCopyViewSet(ScopedReadOnlyViewSet):
    """The copies that exist, per domain and destination (observed after each pass)."""

    queryset = OffnodeCopy.objects.select_related("backup_node", "target")
    serializer_class = OffnodeCopySerializer
    filterset_fields = ["domain", "kind", "backup_node", "target", "source_node"]
    permission_area = "servers"
    ordering = "id"

    @extend_schema(request=ArchiveRestoreSerializer, responses={202: JobSerializer})
    @action(detail=True, methods=["post"])
    def restore(self, request: Request, pk: str | None = None) -> Response:
        """Restore the domain, a mailbox or one folder from this Maildir archive copy,
        into "Restored <date>" (default) or in place."""
        copy = self.get_object()  # 404 outside scope before any field is judged
        serializer = ArchiveRestoreSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        job = archive_restore.start_archive_restore(
            actor=request.user, copy=copy, **serializer.validated_data
        )
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: JobSerializer})
    @action(detail=True, methods=["post"])
    def verify(self, request: Request, pk: str | None = None) -> Response:
        """Verify the copies of this copy's domain on backup targets now (a job)."""
        job = offnode_verify_run.start_verify(actor=request.user, copy=self.get_object())
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
