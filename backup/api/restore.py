"""``POST /api/v1/backup/restores/``: restore a domain, a mailbox or one folder from a
snapshot, as a job (202 with the job; its progress and log at ``/api/v1/jobs/<id>/``);
``POST /api/v1/backup/restores/folders/``: a job that reads a mailbox's folders in it."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from mail.models import Mailbox
from ums.api.fields import SafeCharField, ScopedPrimaryKeyRelatedField
from ums.api.jobs import JobSerializer
from ums.api.serializers import StrictSerializer
from ums.api.viewsets import ScopedViewSetMixin
from ums.models import Job

from .. import restore
from ..models import Snapshot


class RestoreSerializer(StrictSerializer):
    """``snapshot`` (id), ``mailbox`` (id, or null: the whole domain), ``folder`` (a
    Maildir++ name such as ``Sent``, ``INBOX`` or ``Archive.2025``; null: the whole
    mailbox), ``mode`` (``new_folder``, the default, or ``in_place``)."""

    snapshot = ScopedPrimaryKeyRelatedField(queryset=Snapshot.objects.select_related("domain"))
    mailbox = ScopedPrimaryKeyRelatedField(
        queryset=Mailbox.objects.all(), allow_null=True, required=False
    )
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
        errors: dict[str, list[str]] = {}
        mailbox, snapshot = attrs.get("mailbox"), attrs["snapshot"]
        if mailbox is not None and mailbox.domain_id != snapshot.domain_id:
            errors["mailbox"] = [gettext("This mailbox is not in the snapshot's domain.")]
        if attrs.get("folder") is not None and mailbox is None:
            errors["folder"] = [gettext("A folder is restored from one mailbox.")]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class FolderListSerializer(StrictSerializer):
    snapshot = ScopedPrimaryKeyRelatedField(queryset=Snapshot.objects.all())
    mailbox = ScopedPrimaryKeyRelatedField(queryset=Mailbox.objects.all())


class RestoreViewSet(ScopedViewSetMixin, viewsets.GenericViewSet):
    """Restores are jobs: the list is the restore jobs of the subtree, newest first."""

    queryset = Job.objects.filter(kind=restore.RESTORE_JOB)
    serializer_class = RestoreSerializer
    permission_area = "servers"
    http_method_names = ["get", "post", "head", "options"]
    ordering = "-id"

    @extend_schema(responses=JobSerializer(many=True))
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(JobSerializer(page, many=True).data)

    @extend_schema(request=RestoreSerializer, responses={202: JobSerializer})
    def create(self, request: Request) -> Response:
        """Restore from a snapshot as a job; in scope only, every bad field at once."""
        serializer = RestoreSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        job = restore.start_restore(actor=request.user, **serializer.validated_data)
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=FolderListSerializer, responses={202: JobSerializer})
    @action(detail=False, methods=["post"])
    def folders(self, request: Request) -> Response:
        """A job reads the mailbox's folders in the snapshot: its ``result.folders`` is
        ``[[name, messages], ...]``, the names ``folder`` accepts."""
        serializer = FolderListSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        job = restore.start_folder_listing(actor=request.user, **serializer.validated_data)
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
