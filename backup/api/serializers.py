"""API shapes of backup targets (secrets write-only), snapshots and snapshot policies."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext
from rest_framework import serializers

from tenants.models import Customer
from ums.api.fields import SafeCharField, ScopedPrimaryKeyRelatedField
from ums.api.serializers import StrictModelSerializer, StrictSerializer

from ..choices import MAX_KEEP
from ..models import KIND_REQUIRED, BackupTarget, Snapshot
from ..snapshot_run import snapshot_path

TARGET_FIELDS = [
    "id",
    "customer",
    "name",
    "kind",
    "s3_endpoint",
    "s3_region",
    "s3_bucket",
    "s3_prefix",
    "s3_access_key",
    "s3_secret_key",
    "s3_server_side_encryption",
    "cifs_server",
    "cifs_port",
    "cifs_share",
    "cifs_path",
    "cifs_username",
    "cifs_password",
    "cifs_domain",
    "nfs_path",
    "location",
    "has_secret",
    "last_test_at",
    "last_test_ok",
    "last_test_message",
    "created_at",
]


class BackupTargetSerializer(StrictModelSerializer):
    customer = ScopedPrimaryKeyRelatedField(queryset=Customer.objects.all())
    name = SafeCharField(max_length=100)
    s3_secret_key = SafeCharField(write_only=True, required=False, allow_blank=True)
    cifs_password = SafeCharField(write_only=True, required=False, allow_blank=True)
    location = serializers.CharField(read_only=True)
    has_secret = serializers.SerializerMethodField()

    class Meta:
        model = BackupTarget
        fields = TARGET_FIELDS
        read_only_fields = ["last_test_at", "last_test_ok", "last_test_message", "created_at"]

    def get_has_secret(self, obj: BackupTarget) -> bool:
        return bool(obj.s3_secret_key or obj.cifs_password)

    def to_internal_value(self, data: Any) -> Any:
        """Field errors and the kind's missing required fields, reported together."""
        missing: dict[str, list[str]] = {}
        if self.instance is None and isinstance(data, dict):
            kind = data.get("kind")
            for field in KIND_REQUIRED.get(kind, ()) if isinstance(kind, str) else ():
                if not data.get(field):
                    missing[field] = [gettext("Required for this kind of target.")]
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            detail = exc.detail if isinstance(exc.detail, dict) else {}
            raise serializers.ValidationError({**missing, **detail}) from exc
        if missing:
            raise serializers.ValidationError(missing)
        return value


class BackupTargetUpdateSerializer(BackupTargetSerializer):
    customer = serializers.PrimaryKeyRelatedField(read_only=True)
    kind = serializers.CharField(read_only=True)


class SnapshotSerializer(serializers.ModelSerializer):
    domain_name = serializers.CharField(source="domain.name", read_only=True, default=None)
    node_hostname = serializers.CharField(source="node.hostname", read_only=True)
    taken_at = serializers.SerializerMethodField()
    path = serializers.SerializerMethodField()
    excluded = serializers.SerializerMethodField()

    class Meta:
        model = Snapshot
        fields = [
            "id",
            "domain",
            "domain_name",
            "node",
            "node_hostname",
            "dataset",
            "name",
            "tier",
            "taken_at",
            "used_bytes",
            "referenced_bytes",
            "path",
            "excluded",
        ]
        read_only_fields = fields

    def get_taken_at(self, obj: Snapshot) -> float:
        return obj.taken_at.timestamp()

    def get_path(self, obj: Snapshot) -> str:
        return snapshot_path(obj, self.context.get("local_part"))

    def get_excluded(self, obj: Snapshot) -> dict[str, Any]:
        """``{"domain": bool, "mailbox"|"mailboxes": ..., "folders": [...]}``; the view
        reads the exclusions of a whole page at once (``context["exclusions"]``)."""
        from ..exclusion_policy import status
        from ..exclusions import NOTHING

        found = self.context.get("exclusions", {}).get(obj.domain_id, NOTHING)
        return status(found, self.context.get("local_part"))


class SnapshotNowSerializer(StrictSerializer):
    domain = serializers.IntegerField(min_value=1, max_value=2**63 - 1)


class SnapshotPolicySerializer(StrictSerializer):
    """A customer's own values (``null``: inherit)."""

    enabled = serializers.BooleanField(allow_null=True, required=False)
    hourly_keep = serializers.IntegerField(
        allow_null=True, required=False, min_value=0, max_value=MAX_KEEP["hourly_keep"]
    )
    daily_keep = serializers.IntegerField(
        allow_null=True, required=False, min_value=0, max_value=MAX_KEEP["daily_keep"]
    )
    monthly_keep = serializers.IntegerField(
        allow_null=True, required=False, min_value=0, max_value=MAX_KEEP["monthly_keep"]
    )
    manual_keep_days = serializers.IntegerField(
        allow_null=True, required=False, min_value=0, max_value=MAX_KEEP["manual_keep_days"]
    )

    @staticmethod
    def describe(customer: Customer, own: Any, effective: dict) -> dict[str, Any]:
        fields = ("enabled", "hourly_keep", "daily_keep", "monthly_keep", "manual_keep_days")
        return {
            "customer": customer.pk,
            "own": {f: getattr(own, f, None) for f in fields},
            "effective": effective,
        }
