"""API of team chat: organisations (with "sync now") and the users they hold."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from ums.api.jobs import JobSerializer
from ums.api.viewsets import ScopedModelViewSet, ScopedReadOnlyViewSet

from .. import actions
from ..models import ChatAccount, ChatRealm
from . import serializers as s


class ChatRealmViewSet(ScopedModelViewSet):
    queryset = ChatRealm.objects.select_related("customer")
    serializer_class = s.ChatRealmSerializer
    filterset_fields = ["customer", "is_enabled"]
    permission_area = "mail"
    ordering = "id"

    def get_serializer_class(self) -> type:
        if self.action in {"update", "partial_update"}:
            return s.ChatRealmUpdateSerializer
        return super().get_serializer_class()

    def create_object(self, data: dict[str, Any]) -> ChatRealm:
        return actions.create_realm(actor=self.request.user, **data)

    def update_object(self, instance: ChatRealm, data: dict[str, Any]) -> ChatRealm:
        return actions.update_realm(actor=self.request.user, realm=instance, **data)

    def delete_object(self, instance: ChatRealm) -> None:
        actions.delete_realm(actor=self.request.user, realm=instance)

    @extend_schema(request=None, responses={202: JobSerializer})
    @action(detail=True, methods=["post"])
    def sync(self, request: Request, pk: str | None = None) -> Response:
        """Sync now: users, default streams and retention, applied by a job."""
        job = actions.start_sync(actor=request.user, realm=self.get_object())
        if job is None:
            return Response(
                {"detail": "The organisation is disabled."}, status=status.HTTP_409_CONFLICT
            )
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ChatAccountViewSet(ScopedReadOnlyViewSet):
    queryset = ChatAccount.objects.all()
    serializer_class = s.ChatAccountSerializer
    filterset_fields = ["realm", "is_active"]
    permission_area = "mail"
    ordering = "email"
