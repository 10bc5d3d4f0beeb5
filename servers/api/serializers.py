"""API representations of zones, nodes, alerts and metrics."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from tenants.models import Customer
from ums.api.fields import SafeCharField, ScopedPrimaryKeyRelatedField
from ums.api.serializers import StrictModelSerializer, StrictSerializer

from ..choices import LATENCY_WARNING_MS, Role
from ..models import MetricSample, Node, NodeAlert, Zone, ZoneLatency


class ZoneLatencySerializer(serializers.ModelSerializer):
    to_zone_name = serializers.CharField(source="to_zone.name", read_only=True)
    warning = serializers.SerializerMethodField()

    class Meta:
        model = ZoneLatency
        fields = ["to_zone", "to_zone_name", "rtt_ms", "measured_at", "warning"]

    def get_warning(self, obj: ZoneLatency) -> bool:
        return obj.rtt_ms > LATENCY_WARNING_MS


class ZoneSerializer(StrictModelSerializer):
    name = SafeCharField(max_length=100)
    location = SafeCharField(max_length=200, required=False, allow_blank=True)
    notes = SafeCharField(max_length=2000, required=False, allow_blank=True)
    customer = ScopedPrimaryKeyRelatedField(queryset=Customer.objects.all())
    latencies = ZoneLatencySerializer(source="latencies_from", many=True, read_only=True)

    class Meta:
        model = Zone
        fields = [
            "id",
            "customer",
            "name",
            "location",
            "site_kind",
            "redundancy",
            "notes",
            "latencies",
            "created_at",
        ]
        read_only_fields = ["created_at"]


class ZoneUpdateSerializer(ZoneSerializer):
    customer = serializers.PrimaryKeyRelatedField(read_only=True)


class NodeSerializer(StrictModelSerializer):
    zone = ScopedPrimaryKeyRelatedField(queryset=Zone.objects.all())
    roles = serializers.ListField(
        child=serializers.ChoiceField(choices=Role.choices), max_length=len(Role.choices)
    )
    ssh_port = serializers.IntegerField(min_value=1, max_value=65535)
    storage_service = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9@._-]{0,63}$", required=False)
    disk_iops_capacity = serializers.IntegerField(
        min_value=1, max_value=10_000_000, required=False, allow_null=True
    )
    network_mbit_capacity = serializers.IntegerField(
        min_value=1, max_value=10_000_000, required=False, allow_null=True
    )

    class Meta:
        model = Node
        fields = [
            "id",
            "customer",
            "zone",
            "hostname",
            "addresses",
            "ssh_address",
            "ssh_port",
            "os_id",
            "os_version",
            "os_pretty_name",
            "cpus",
            "memory_mb",
            "disks",
            "reported_host_keys",
            "pinned_host_keys",
            "roles",
            "status",
            "storage_service",
            "storage_requested",
            "storage_applied",
            "storage_error",
            "disk_iops_capacity",
            "network_mbit_capacity",
            "controller_key_version",
            "registered_at",
            "approved_at",
            "last_seen_at",
            "missed_collections",
            "host_key_alert",
        ]
        read_only_fields = [
            f
            for f in fields
            if f
            not in {
                "zone",
                "roles",
                "ssh_port",
                "storage_service",
                "disk_iops_capacity",
                "network_mbit_capacity",
            }
        ]


class NodeActionSerializer(StrictSerializer):
    action = serializers.ChoiceField(
        choices=[
            "reboot",
            "shutdown",
            "start_services",
            "restart_service",
            "storage_start",
            "storage_stop",
            "rotate_key",
            "decommission",
            "office_check",  # office nodes only (deploy.actions.ROLE_ACTIONS)
        ]
    )
    service = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9@._-]{0,63}$", required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["action"] == "restart_service" and not attrs.get("service"):
            raise serializers.ValidationError({"service": "Name the service to restart."})
        return attrs


class AcceptHostKeySerializer(StrictSerializer):
    host_key = serializers.CharField(max_length=4096)


class NodeAlertSerializer(serializers.ModelSerializer):
    hostname = serializers.CharField(source="node.hostname", read_only=True)

    class Meta:
        model = NodeAlert
        fields = ["id", "node", "hostname", "kind", "message", "created_at", "resolved_at"]
        read_only_fields = fields


class MetricSampleSerializer(serializers.ModelSerializer):
    memory_percent = serializers.FloatField(read_only=True)

    class Meta:
        model = MetricSample
        fields = [
            "at",
            "resolution",
            "cpu_percent",
            "load1",
            "disk_iops",
            "net_mbit",
            "memory_total_kb",
            "memory_available_kb",
            "memory_percent",
            "disks",
            "uptime_seconds",
        ]
        read_only_fields = fields


class CapacityResourceSerializer(serializers.Serializer):
    guideline = serializers.IntegerField(help_text="The sheet's figure for the zone's users.")
    recommended = serializers.IntegerField(help_text="Guideline ×3, or measured ×3 if heavier.")
    declared = serializers.IntegerField(allow_null=True, help_text="Sum of node declarations.")
    nodes = serializers.IntegerField()
    undeclared_nodes = serializers.IntegerField()
    measured_p95 = serializers.FloatField(allow_null=True, help_text="Sum of node p95s, 24 h.")
    shortfall = serializers.IntegerField(allow_null=True)
    load_percent = serializers.FloatField(allow_null=True)


class ZoneCapacitySerializer(serializers.Serializer):
    zone = serializers.IntegerField(source="zone.pk")
    zone_name = serializers.CharField(source="zone.name")
    users = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["ok", "short", "unknown"])
    disk_iops = CapacityResourceSerializer(source="disk")
    network_mbit = CapacityResourceSerializer(source="network")
    needs = serializers.ListField(child=serializers.CharField())
