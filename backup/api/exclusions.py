"""API of exclusion policies and per mail store settings.

* ``/backup/exclusions/`` lists every exclusion row in scope (what is left out, where);
* ``/backup/exclusions/customers|domains|mailboxes/<id>/``: GET the object's own values,
  what it inherits and the effective result with the source of each item; PATCH
  ``{"excluded": bool, "folders": [...]}`` (folders on customers and domains only);
* ``/backup/mail-stores/<node id>/``: GET/PATCH an IMAP node's compression, dedup and
  snapshot policy override and tiering policy; POST ``.../tier-now/`` starts a pass;
* ``/backup/tier-usage/``: bytes per tier per domain, as the last pass measured them.

All scoped (404 outside), every field error at once, audited by the actions.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from mail.models import Domain, Mailbox
from servers.models import Node
from tenants.models import Customer
from ums.api.jobs import JobSerializer
from ums.api.serializers import StrictSerializer
from ums.api.viewsets import ScopedReadOnlyViewSet, ScopedViewSetMixin

from .. import exclusion_policy as policy
from .. import store_settings, tiering
from ..choices import MAX_KEEP, TierKind
from ..exclusion_actions import set_exclusion
from ..models import BackupExclusion, TierUsage

_FOLDER = serializers.CharField(trim_whitespace=False, allow_blank=True, max_length=1000)


class ExclusionSerializer(StrictSerializer):
    excluded = serializers.BooleanField(required=False)
    folders = serializers.ListField(child=_FOLDER, required=False, max_length=1000)

    def validate_folders(self, value: list[str]) -> list[str]:
        # Checked here as well as in the action, so a bad "excluded" and bad folders are
        # reported together.
        try:
            return policy.clean_folders(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict["folders"]) from exc


class ExclusionRowSerializer(serializers.ModelSerializer):
    level = serializers.SerializerMethodField()
    target = serializers.SerializerMethodField()
    name = serializers.SerializerMethodField()

    class Meta:
        model = BackupExclusion
        fields = ["id", "level", "target", "name", "excluded", "folders"]
        read_only_fields = fields

    def get_level(self, obj: BackupExclusion) -> str:
        return "customer" if obj.customer_id else "domain" if obj.domain_id else "mailbox"

    def get_target(self, obj: BackupExclusion) -> int:
        return obj.customer_id or obj.domain_id or obj.mailbox_id

    def get_name(self, obj: BackupExclusion) -> str:
        if obj.customer_id:
            return obj.customer.name
        return obj.domain.name if obj.domain_id else obj.mailbox.email


class ExclusionViewSet(ScopedReadOnlyViewSet):
    """Every customer, domain and mailbox in scope that leaves something out."""

    queryset = BackupExclusion.objects.select_related("customer", "domain", "mailbox")
    serializer_class = ExclusionRowSerializer
    permission_area = "servers"
    ordering = "id"


def _own(row: BackupExclusion | None) -> dict[str, Any]:
    return {"excluded": bool(row and row.excluded), "folders": list(row.folders) if row else []}


def describe_customer(customer: Customer) -> dict[str, Any]:
    return {
        "customer": customer.pk,
        "own": _own(policy.own(customer=customer)),
        "inherited": policy.describe_customer(customer, upto_parent=True),
        "effective": policy.describe_customer(customer),
    }


def describe_domain(domain: Domain) -> dict[str, Any]:
    return {
        "domain": domain.pk,
        "own": _own(policy.own(domain=domain)),
        "effective": policy.describe(domain),
    }


def describe_mailbox(mailbox: Mailbox) -> dict[str, Any]:
    effective = policy.describe(mailbox.domain)
    mine = [m for m in effective["mailboxes"] if m["local_part"] == mailbox.local_part.lower()]
    return {
        "mailbox": mailbox.pk,
        "own": {"excluded": bool((row := policy.own(mailbox=mailbox)) and row.excluded)},
        "effective": {
            "excluded": effective["domain"] or (mine[0]["source"] if mine else None),
            "folders": effective["folders"],
        },
    }


class _ExclusionLevelViewSet(ScopedViewSetMixin, viewsets.GenericViewSet):
    serializer_class = ExclusionSerializer
    permission_area = "servers"
    http_method_names = ["get", "patch", "head", "options"]
    kwarg = ""

    def describe(self, obj: Any) -> dict[str, Any]:
        raise NotImplementedError

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(self.describe(self.get_object()))

    @extend_schema(request=ExclusionSerializer, responses=OpenApiTypes.OBJECT)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        obj = self.get_object()
        serializer = ExclusionSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        set_exclusion(actor=request.user, **{self.kwarg: obj}, **serializer.validated_data)
        return Response(self.describe(obj))


class CustomerExclusionViewSet(_ExclusionLevelViewSet):
    queryset = Customer.objects.all()
    kwarg = "customer"

    def describe(self, obj: Customer) -> dict[str, Any]:
        return describe_customer(obj)


class DomainExclusionViewSet(_ExclusionLevelViewSet):
    queryset = Domain.objects.all()
    kwarg = "domain"

    def describe(self, obj: Domain) -> dict[str, Any]:
        return describe_domain(obj)


class MailboxExclusionViewSet(_ExclusionLevelViewSet):
    queryset = Mailbox.objects.select_related("domain")
    kwarg = "mailbox"

    def describe(self, obj: Mailbox) -> dict[str, Any]:
        return describe_mailbox(obj)


# ----------------------------------------------------------------------- mail stores


def _keep(field: str) -> serializers.IntegerField:
    return serializers.IntegerField(
        allow_null=True, required=False, min_value=0, max_value=MAX_KEEP[field]
    )


class TierUsageSerializer(serializers.ModelSerializer):
    domain_name = serializers.CharField(source="domain.name", read_only=True)
    node_hostname = serializers.CharField(source="node.hostname", read_only=True)

    class Meta:
        model = TierUsage
        fields = (
            "id",
            "domain",
            "domain_name",
            "node",
            "node_hostname",
            "primary_bytes",
            "primary_messages",
            "tier_kind",
            "tier_bytes",
            "tier_messages",
            "measured_at",
        )
        read_only_fields = fields


class MailStoreSettingsSerializer(StrictSerializer):
    """Blank or ``null``: the global ``UMS_NODE_SETTINGS`` / the customers' policy."""

    compression = serializers.CharField(required=False, allow_blank=True, max_length=16)
    dedup = serializers.CharField(required=False, allow_blank=True, max_length=8)
    enabled = serializers.BooleanField(allow_null=True, required=False)
    hourly_keep = _keep("hourly_keep")
    daily_keep = _keep("daily_keep")
    monthly_keep = _keep("monthly_keep")
    tier_days = serializers.IntegerField(
        allow_null=True, required=False, min_value=1, max_value=36500
    )
    tier_kind = serializers.ChoiceField(
        choices=[("", "-"), *TierKind.choices], required=False, allow_blank=True
    )
    tier_path = serializers.CharField(required=False, allow_blank=True, max_length=300)
    tier_target = serializers.IntegerField(allow_null=True, required=False, min_value=1)
    tier_recall = serializers.BooleanField(required=False)

    def validate_tier_path(self, value: str) -> str:
        found = store_settings.tier_problems({"tier_path": value}).get("tier_path")
        if found:
            raise serializers.ValidationError(found)
        return value

    def _check(self, field: str, value: str) -> str:
        # The node's own checks here too, so they come with the other field errors.
        found = store_settings.problems(self.context["node"], {field: value}).get(field)
        if found:
            raise serializers.ValidationError(found)
        return value

    def validate_compression(self, value: str) -> str:
        return self._check("compression", value)

    def validate_dedup(self, value: str) -> str:
        return self._check("dedup", value)


class MailStoreSettingsViewSet(ScopedViewSetMixin, viewsets.GenericViewSet):
    """``/backup/mail-stores/<node id>/``: own values, effective ones, the choices."""

    queryset = Node.objects.all()
    serializer_class = MailStoreSettingsSerializer
    permission_area = "servers"
    http_method_names = ["get", "patch", "post", "head", "options"]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(store_settings.describe(self.get_object()))

    @extend_schema(request=MailStoreSettingsSerializer, responses=OpenApiTypes.OBJECT)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        node = self.get_object()
        serializer = MailStoreSettingsSerializer(
            data=request.data, partial=True, context={"node": node}
        )
        serializer.is_valid(raise_exception=True)
        store_settings.set_store_settings(
            actor=request.user, node=node, **serializer.validated_data
        )
        return Response(store_settings.describe(node))

    @extend_schema(request=None, responses={202: JobSerializer})
    @action(detail=True, methods=["post"], url_path="tier-now")
    def tier_now(self, request: Request, pk: str | None = None) -> Response:
        """Tier now: a job runs the store's tiering pass (progress in the job)."""
        job = tiering.tier_now(actor=request.user, node=self.get_object())
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class TierUsageViewSet(ScopedReadOnlyViewSet):
    """``/backup/tier-usage/``: bytes and messages per tier of each domain in scope, as
    the last tiering pass of its node measured them (``?domain=ID``)."""

    queryset = TierUsage.objects.select_related("domain", "node").order_by("domain__name")
    serializer_class = TierUsageSerializer
    filterset_fields = ["domain", "node"]
    permission_area = "servers"
