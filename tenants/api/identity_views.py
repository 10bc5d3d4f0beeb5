"""API endpoints of identity: the two-factor policy per customer, second-factor status and
reset of administrators, one's own sessions, and SAML / LDAP settings per customer.

All of them are scoped by the base viewsets (outside the subtree is 404). The SAML browser
endpoints (metadata, assertion consumer) are portal pages under ``/sso/``, not API routes.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from ums.api.viewsets import ScopedModelViewSet, ScopedViewSetMixin

from .. import identity_actions as ia
from .. import permissions as perms
from .. import session_records
from ..models import Administrator, Customer
from ..models_identity import LdapDirectory, SamlIdentityProvider, SessionRecord
from ..twofactor import policy
from . import identity_serializers as s


class TwoFactorPolicyViewSet(
    ScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """``requireTwoFactor`` per customer; ``effective`` adds what customers above require."""

    queryset = Customer.objects.all()
    serializer_class = s.TwoFactorPolicySerializer
    permission_area = "customers"
    ordering = "path"
    http_method_names = ["get", "patch", "head", "options"]

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        context["required_above_ids"] = self._required_above_ids()
        return context

    def _required_above_ids(self) -> set[int]:
        # Which listed customers have a requiring strict ancestor: one query over the
        # requiring customers, compared by path prefix.
        requiring = list(
            Customer.objects.filter(require_two_factor=True).values_list("path", flat=True)
        )
        cache: set[int] = set()
        if not requiring:
            return cache
        lookup = self.kwargs.get("pk")
        queryset = self.get_queryset()
        if lookup:
            queryset = queryset.filter(pk=lookup)
        for pk, path in queryset.values_list("pk", "path")[:5000]:
            if any(path.startswith(p) and path != p for p in requiring):
                cache.add(pk)
        return cache

    def perform_update(self, serializer: Any) -> None:
        data = serializer.validated_data
        if "require_two_factor" in data:
            serializer.instance = ia.set_two_factor_policy(
                actor=self.request.user,
                customer=serializer.instance,
                required=data["require_two_factor"],
            )


class TwoFactorStatusViewSet(ScopedViewSetMixin, viewsets.ReadOnlyModelViewSet):
    """Which administrators in scope have a second factor; ``reset`` removes it (audited)."""

    queryset = Administrator.objects.all()
    serializer_class = s.TwoFactorStatusSerializer
    permission_area = "administrators"
    required_permissions = {"reset": perms.ADMINISTRATORS_MANAGE}
    ordering = "id"

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        return policy.with_factor_flags(queryset).annotate(
            key_count=Count("security_keys", distinct=True)
        )

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        user = self.request.user
        if user and user.is_authenticated:
            paths = list(
                Customer.objects.filter(path__startswith=user.customer_path).values_list(
                    "path", flat=True
                )[:10000]
            )
            context["required_paths"] = policy.requiring_paths(paths)
        return context

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["post"])
    def reset(self, request: Request, pk: str | None = None) -> Response:
        target = self.get_object()
        ia.reset_two_factor(actor=request.user, admin=target)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """One's own signed-in portal sessions. DELETE signs one out; ``revoke-others`` all but
    the calling session (all of them when called with a token)."""

    serializer_class = s.SessionSerializer
    required_permissions: dict[str, str | None] = {}
    lookup_value_regex = r"[0-9]{1,18}"
    ordering = "-id"

    def get_queryset(self) -> Any:
        # Narrower than the customer scope: nobody lists or ends another person's sessions.
        return SessionRecord.objects.filter(owner_id=self.request.user.pk, revoked_at__isnull=True)

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        context["current_hash"] = session_records.current_hash(self.request._request)
        return context

    def perform_destroy(self, instance: SessionRecord) -> None:
        ia.revoke_session(actor=self.request.user, record=instance)

    @extend_schema(request=None, responses={200: None})
    @action(detail=False, methods=["post"], url_path="revoke-others")
    def revoke_others(self, request: Request) -> Response:
        ended = ia.revoke_other_sessions(
            actor=request.user, keep_hash=session_records.current_hash(request._request)
        )
        return Response({"revoked": ended})


class SamlProviderViewSet(ScopedModelViewSet):
    queryset = SamlIdentityProvider.objects.select_related("customer")
    serializer_class = s.SamlProviderSerializer
    permission_area = "customers"
    ordering = "id"

    def get_serializer_class(self) -> type:
        if self.action in {"update", "partial_update"}:
            return s.SamlProviderUpdateSerializer
        return super().get_serializer_class()

    def create_object(self, data: dict[str, Any]) -> SamlIdentityProvider:
        return ia.save_saml_provider(actor=self.request.user, **data)

    def update_object(self, instance: SamlIdentityProvider, data: dict[str, Any]) -> Any:
        data.pop("customer", None)
        return ia.save_saml_provider(actor=self.request.user, provider=instance, **data)

    def delete_object(self, instance: SamlIdentityProvider) -> None:
        ia.delete_saml_provider(actor=self.request.user, provider=instance)


class LdapDirectoryViewSet(ScopedModelViewSet):
    queryset = LdapDirectory.objects.select_related("customer")
    serializer_class = s.LdapDirectorySerializer
    permission_area = "customers"
    ordering = "id"

    def get_serializer_class(self) -> type:
        if self.action in {"update", "partial_update"}:
            return s.LdapDirectoryUpdateSerializer
        return super().get_serializer_class()

    @staticmethod
    def _values(data: dict[str, Any]) -> dict[str, Any]:
        if "group_permissions" in data:
            data["group_permissions"] = [dict(entry) for entry in data["group_permissions"]]
        if not data.get("bind_password"):
            data.pop("bind_password", None)
        return data

    def create_object(self, data: dict[str, Any]) -> LdapDirectory:
        return ia.save_ldap_directory(actor=self.request.user, **self._values(data))

    def update_object(self, instance: LdapDirectory, data: dict[str, Any]) -> Any:
        data.pop("customer", None)
        return ia.save_ldap_directory(
            actor=self.request.user, directory=instance, **self._values(data)
        )

    def delete_object(self, instance: LdapDirectory) -> None:
        ia.delete_ldap_directory(actor=self.request.user, directory=instance)
