"""Base API viewsets: scoping, the actor in the action context, writes through actions.

A concrete viewset is a queryset, serializer classes, a filterset and three small hooks
that call the app's action functions (``create_object``, ``update_object``,
``delete_object``). Scoping is applied here, once, to every queryset.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from rest_framework import mixins, viewsets
from rest_framework.request import Request

from ums import context, scoping


class ScopedViewSetMixin:
    # Ids are bounded so an absurd id is a 404, never a database error.
    lookup_value_regex = r"[0-9]{1,18}"
    permission_area: str | None = None
    required_permissions: dict[str, str | None] = {}

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if request.user and request.user.is_authenticated:
            context.set_actor(request.user)

    def get_queryset(self) -> models.QuerySet:
        queryset = super().get_queryset()
        return scoping.scope_queryset(queryset, self.request.user)


class ScopedReadOnlyViewSet(ScopedViewSetMixin, viewsets.ReadOnlyModelViewSet):
    pass


class ScopedModelViewSet(ScopedViewSetMixin, viewsets.ModelViewSet):
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def create_object(self, data: dict[str, Any]) -> models.Model:
        raise NotImplementedError

    def update_object(self, instance: models.Model, data: dict[str, Any]) -> models.Model:
        raise NotImplementedError

    def delete_object(self, instance: models.Model) -> None:
        raise NotImplementedError

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = self.create_object(dict(serializer.validated_data))

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = self.update_object(
            serializer.instance, dict(serializer.validated_data)
        )

    def perform_destroy(self, instance: models.Model) -> None:
        self.delete_object(instance)


class ScopedCreateListViewSet(
    ScopedViewSetMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """For objects that are created and removed but never edited (tokens)."""

    def create_object(self, data: dict[str, Any]) -> models.Model:
        raise NotImplementedError

    def delete_object(self, instance: models.Model) -> None:
        raise NotImplementedError

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = self.create_object(dict(serializer.validated_data))

    def perform_destroy(self, instance: models.Model) -> None:
        self.delete_object(instance)
