"""API of cloud files under /api/v1/files/: the policy per customer and link revocation.

``policies/{customer id}/``: GET shows the customer's own settings and the effective ones
with their source; PATCH sets fields (``null`` inherits). ``revoke-links/``: POST queues
the revocation job (202 with the job; follow it under /api/v1/jobs/).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from mail.models import Mailbox
from tenants.models import Customer
from ums import scoping
from ums.api.viewsets import ScopedViewSetMixin

from .. import actions, policy
from ..models import FilesPolicy

#: Ids are bounded like the URL lookups: an absurd id is a field error, never a database error.
MAX_ID = 2**63 - 1


class PolicySerializer(serializers.Serializer):
    internal_shares = serializers.BooleanField(allow_null=True, required=False)
    external_links = serializers.BooleanField(allow_null=True, required=False)
    password_required = serializers.BooleanField(allow_null=True, required=False)
    expire_days = serializers.IntegerField(
        allow_null=True, required=False, min_value=0, max_value=actions.MAX_EXPIRE_DAYS
    )
    quota_mb = serializers.IntegerField(
        allow_null=True, required=False, min_value=0, max_value=actions.MAX_QUOTA_MB
    )


class RevokeSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=actions.SCOPES)
    customer = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    mailbox = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)


def _errors(exc: DjangoValidationError) -> ValidationError:
    return ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)


def policy_body(customer: Customer) -> dict[str, Any]:
    row = FilesPolicy.objects.filter(pk=customer.pk).first()
    return {
        "customer": customer.pk,
        "own": {f: getattr(row, f) if row else None for f in policy.FIELDS},
        "effective": policy.effective(customer),
    }


class FilesPolicyViewSet(ScopedViewSetMixin, viewsets.GenericViewSet):
    queryset = Customer.objects.all()
    serializer_class = PolicySerializer
    permission_area = "mail"
    http_method_names = ["get", "patch", "head", "options"]

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(policy_body(self.get_object()))

    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        customer = self.get_object()
        serializer = PolicySerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            actions.update_files_policy(
                actor=request.user, customer=customer, **serializer.validated_data
            )
        except DjangoValidationError as exc:
            raise _errors(exc) from exc
        return Response(policy_body(customer))


class RevokeLinksViewSet(ScopedViewSetMixin, viewsets.GenericViewSet):
    queryset = Customer.objects.all()
    serializer_class = RevokeSerializer
    permission_area = "mail"

    def create(self, request: Request) -> Response:
        serializer = RevokeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        customer = mailbox = None
        if data.get("customer"):
            customer = scoping.get_in_scope_or_404(
                Customer.objects.all(), request.user, pk=data["customer"]
            )
        if data.get("mailbox"):
            mailbox = scoping.get_in_scope_or_404(
                Mailbox.objects.all(), request.user, pk=data["mailbox"]
            )
        try:
            job = actions.revoke_external_links(
                actor=request.user, scope=data["scope"], customer=customer, mailbox=mailbox
            )
        except DjangoValidationError as exc:
            raise _errors(exc) from exc
        return Response({"job": job.pk, "title": job.title}, status=status.HTTP_202_ACCEPTED)
