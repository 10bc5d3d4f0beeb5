"""API endpoints for customers, administrators and API tokens."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from ums import scoping
from ums.api.viewsets import ScopedCreateListViewSet, ScopedModelViewSet

from .. import actions
from .. import permissions as perms
from ..filtersets import AdministratorFilterSet, ApiTokenFilterSet, CustomerFilterSet
from ..models import Administrator, ApiToken, Customer
from ..twofactor.session import proof_from_session
from ..twofactor.verify import proof_from_code
from . import serializers as s
from .identity_serializers import ApiTokenCreateSerializer


class CustomerViewSet(ScopedModelViewSet):
    queryset = Customer.objects.all()
    serializer_class = s.CustomerSerializer
    filterset_class = CustomerFilterSet
    permission_area = "customers"
    ordering = "path"

    def get_serializer_class(self) -> type:
        if self.action in {"update", "partial_update"}:
            return s.CustomerUpdateSerializer
        if self.action == "move":
            return s.CustomerMoveSerializer
        return super().get_serializer_class()

    def create_object(self, data: dict[str, Any]) -> Customer:
        return actions.create_customer(actor=self.request.user, **data)

    def update_object(self, instance: Customer, data: dict[str, Any]) -> Customer:
        return actions.update_customer(actor=self.request.user, customer=instance, **data)

    def delete_object(self, instance: Customer) -> None:
        actions.delete_customer(actor=self.request.user, customer=instance)

    @extend_schema(responses=s.CustomerSerializer)
    @action(detail=True, methods=["get"])
    def children(self, request: Request, pk: str | None = None) -> Response:
        parent = self.get_object()
        queryset = self.filter_queryset(self.get_queryset().filter(parent=parent))
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(s.CustomerSerializer(page, many=True).data)

    @extend_schema(responses=s.CustomerBreadcrumbSerializer(many=True))
    @action(detail=True, methods=["get"])
    def ancestors(self, request: Request, pk: str | None = None) -> Response:
        """The breadcrumb: ancestors within the caller's scope, top first, then the customer."""
        customer = self.get_object()
        crumbs = scoping.scope_queryset(
            Customer.objects.filter(path__in=customer.ancestor_paths), request.user
        ).order_by("depth")
        return Response(s.CustomerBreadcrumbSerializer(crumbs, many=True).data)

    @extend_schema(request=s.CustomerMoveSerializer, responses=s.CustomerSerializer)
    @action(detail=True, methods=["post"])
    def move(self, request: Request, pk: str | None = None) -> Response:
        customer = self.get_object()
        serializer = s.CustomerMoveSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        moved = actions.move_customer(
            actor=request.user, customer=customer, new_parent=serializer.validated_data["parent"]
        )
        return Response(s.CustomerSerializer(moved).data)

    @extend_schema(request=None, responses=s.CustomerSerializer)
    @action(detail=True, methods=["post"])
    def disable(self, request: Request, pk: str | None = None) -> Response:
        customer = actions.set_customer_active(
            actor=request.user, customer=self.get_object(), active=False
        )
        return Response(s.CustomerSerializer(customer).data)

    @extend_schema(request=None, responses=s.CustomerSerializer)
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, pk: str | None = None) -> Response:
        customer = actions.set_customer_active(
            actor=request.user, customer=self.get_object(), active=True
        )
        return Response(s.CustomerSerializer(customer).data)


class AdministratorViewSet(ScopedModelViewSet):
    queryset = Administrator.objects.all()
    serializer_class = s.AdministratorSerializer
    filterset_class = AdministratorFilterSet
    permission_area = "administrators"
    required_permissions = {"set_password": None, "me": None}
    ordering = "id"

    def get_serializer_class(self) -> type:
        if self.action in {"update", "partial_update"}:
            return s.AdministratorUpdateSerializer
        if self.action == "set_password":
            return s.PasswordSerializer
        return super().get_serializer_class()

    def create_object(self, data: dict[str, Any]) -> Administrator:
        return actions.create_administrator(actor=self.request.user, **data)

    def update_object(self, instance: Administrator, data: dict[str, Any]) -> Administrator:
        return actions.update_administrator(actor=self.request.user, admin=instance, **data)

    def delete_object(self, instance: Administrator) -> None:
        actions.delete_administrator(actor=self.request.user, admin=instance)

    @extend_schema(responses=s.AdministratorSerializer)
    @action(detail=False, methods=["get"])
    def me(self, request: Request) -> Response:
        return Response(s.AdministratorSerializer(request.user).data)

    @extend_schema(request=s.PasswordSerializer, responses={204: None})
    @action(detail=True, methods=["post"], url_path="set-password")
    def set_password(self, request: Request, pk: str | None = None) -> Response:
        target = self.get_object()
        serializer = s.PasswordSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        actions.set_administrator_password(
            actor=request.user, admin=target, password=serializer.validated_data["password"]
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiTokenViewSet(ScopedCreateListViewSet):
    """Tokens: one's own, plus those of administrators one manages (to revoke them)."""

    queryset = ApiToken.objects.select_related("owner")
    serializer_class = s.ApiTokenSerializer
    filterset_class = ApiTokenFilterSet
    required_permissions = {
        "list": None,
        "retrieve": None,
        "create": perms.TOKENS_MANAGE,
        "destroy": None,
    }
    ordering = "-id"

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        user = self.request.user
        if user.has_permission(perms.ADMINISTRATORS_VIEW):
            return queryset
        return queryset.filter(owner=user)

    def get_serializer_class(self) -> type:
        if self.action == "create":
            return ApiTokenCreateSerializer
        return super().get_serializer_class()

    @extend_schema(request=ApiTokenCreateSerializer, responses={201: s.ApiTokenCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        code = data.pop("otp", None)
        # A token outlives whatever made it: with a second factor enrolled, a session must
        # have passed it recently; a token-authenticated call sends the app's current code.
        if isinstance(request.auth, ApiToken):
            proof = proof_from_code(request.user, code, purpose="token")
        else:
            proof = proof_from_session(request._request)
        token, full = actions.create_token(actor=request.user, second_factor=proof, **data)
        data = s.ApiTokenCreatedSerializer(token, context={"full_token": full}).data
        return Response(data, status=status.HTTP_201_CREATED)

    def delete_object(self, instance: ApiToken) -> None:
        actions.revoke_token(actor=self.request.user, token=instance)
