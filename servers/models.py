"""Zones, nodes, enrolment tokens, node alerts and metric samples."""

from __future__ import annotations

from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from tenants.models import Customer
from ums.validators import no_control_characters, not_blank, trimmed

from .choices import NodeStatus, Redundancy, SiteKind


class Zone(models.Model):
    """A site: a datacentre or the customer's premises, run HOT-HOT or HOT-WARM."""

    scope_path_field = "customer_path"
    audit_fields = ("name", "location", "site_kind", "redundancy", "notes")

    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="zones", verbose_name=_("customer")
    )
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    name = models.CharField(
        _("name"), max_length=100, validators=[no_control_characters, not_blank, trimmed]
    )
    location = models.CharField(
        _("location"), max_length=200, blank=True, validators=[no_control_characters]
    )
    site_kind = models.CharField(
        _("site"), max_length=12, choices=SiteKind.choices, default=SiteKind.DATACENTRE
    )
    redundancy = models.CharField(
        _("redundancy"), max_length=10, choices=Redundancy.choices, default=Redundancy.HOT_HOT
    )
    notes = models.TextField(_("notes"), blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("zone")
        verbose_name_plural = _("zones")
        ordering = ("name",)
        constraints = [
            models.UniqueConstraint(Lower("name"), "customer", name="zone_unique_name_per_customer")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def audit_customer(self) -> Customer:
        return self.customer


class ZoneLatency(models.Model):
    """Round-trip time between two zones, measured from a node of the first."""

    scope_path_field = "customer_path"

    from_zone = models.ForeignKey(Zone, on_delete=models.CASCADE, related_name="latencies_from")
    to_zone = models.ForeignKey(Zone, on_delete=models.CASCADE, related_name="latencies_to")
    customer_path = models.CharField(max_length=1000, editable=False)
    rtt_ms = models.FloatField()
    measured_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["from_zone", "to_zone"], name="zone_latency_pair")
        ]

    def __str__(self) -> str:
        return f"{self.from_zone} → {self.to_zone}: {self.rtt_ms:.1f} ms"


class Node(models.Model):
    """A server running UMS services, enrolled with bootstrapcore.sh."""

    scope_path_field = "customer_path"
    audit_fields = (
        "hostname",
        "zone",
        "roles",
        "status",
        "ssh_port",
        "storage_service",
        "disk_iops_capacity",
        "network_mbit_capacity",
    )

    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="nodes", verbose_name=_("customer")
    )
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    zone = models.ForeignKey(
        Zone, on_delete=models.PROTECT, related_name="nodes", verbose_name=_("zone")
    )
    hostname = models.CharField(_("hostname"), max_length=253)
    addresses = models.JSONField(_("addresses"), default=list)
    ssh_address = models.GenericIPAddressField(_("SSH address"))
    ssh_port = models.PositiveIntegerField(_("SSH port"), default=22)
    os_id = models.CharField(_("OS"), max_length=32, blank=True)
    os_version = models.CharField(_("OS version"), max_length=32, blank=True)
    os_pretty_name = models.CharField(max_length=200, blank=True)
    cpus = models.PositiveIntegerField(_("CPUs"), default=0)
    memory_mb = models.PositiveIntegerField(_("memory (MB)"), default=0)
    disks = models.JSONField(_("disks"), default=list, blank=True)
    # Keys the node reported when it registered; pinned (trusted) only once approved.
    reported_host_keys = models.JSONField(default=list, blank=True)
    pinned_host_keys = models.JSONField(default=list, blank=True)
    roles = models.JSONField(_("roles"), default=list, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=NodeStatus.choices, default=NodeStatus.PENDING
    )
    storage_service = models.CharField(
        _("storage volume service"), max_length=64, blank=True, default="zfs-fuse"
    )
    # Storage start/stop (deploy/node_storage.py): what the operator asked for last, and
    # what a storage job last made true on the node (running until one stops it). The
    # reconciler re-drives the request until both agree (deploy/storage_reconcile.py).
    storage_requested = models.CharField(max_length=8, default="running")
    storage_applied = models.CharField(max_length=8, default="running")
    storage_error = models.TextField(blank=True, default="")
    # What the operator knows the hardware can do (a disk benchmark, the link speed): the
    # capacity page compares these with the sheet's guideline and with measured load.
    # Empty means unknown, never "zero".
    disk_iops_capacity = models.PositiveIntegerField(
        _("disk IOPS capacity"), null=True, blank=True, validators=[MaxValueValidator(10_000_000)]
    )
    network_mbit_capacity = models.PositiveIntegerField(
        _("network capacity (Mbit/s)"),
        null=True,
        blank=True,
        validators=[MaxValueValidator(10_000_000)],
    )
    controller_key_version = models.PositiveIntegerField(null=True, blank=True)
    enrolled_with_id = models.BigIntegerField(null=True, blank=True)
    registered_at = models.DateTimeField(default=timezone.now)
    approved_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    missed_collections = models.PositiveIntegerField(default=0)
    host_key_alert = models.TextField(blank=True)
    # The last rule and signature update run (deploy.rule_updates): when it ran, when it
    # last installed something, versions per channel and signature file, and errors.
    rule_updates = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        verbose_name = _("node")
        verbose_name_plural = _("nodes")
        ordering = ("hostname",)
        indexes = [models.Index(fields=["status"], name="node_status")]

    def __str__(self) -> str:
        return self.hostname

    @property
    def audit_customer(self) -> Customer:
        return self.customer

    @property
    def rule_update_summary(self) -> dict | None:
        """``rule_updates`` for the node page: times as datetimes, one line per item."""
        from django.utils.dateparse import parse_datetime

        data = self.rule_updates or {}
        if not data.get("checked_at"):
            return None
        items = [
            {"name": name, **entry}
            for part in ("spamassassin", "clamav")
            for name, entry in sorted((data.get(part) or {}).items())
        ]
        return {
            "checked_at": parse_datetime(data["checked_at"]),
            "updated_at": parse_datetime(data["updated_at"]) if data.get("updated_at") else None,
            "items": items,
            "errors": data.get("errors") or [],
        }

    @property
    def is_reachable(self) -> bool:
        from .choices import REACHABLE_STATUSES

        return self.status in REACHABLE_STATUSES and not self.host_key_alert


class EnrolmentToken(models.Model):
    """Lets bootstrapcore.sh register nodes into one zone: N uses, expiring, revocable."""

    scope_path_field = "customer_path"
    audit_fields = ("name", "zone", "max_uses", "expires_at", "revoked_at")

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="+")
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    zone = models.ForeignKey(Zone, on_delete=models.PROTECT, related_name="enrolment_tokens")
    name = models.CharField(
        _("name"), max_length=100, validators=[no_control_characters, not_blank, trimmed]
    )
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    max_uses = models.PositiveIntegerField(_("uses allowed"), default=1)
    uses = models.PositiveIntegerField(default=0, editable=False)
    expires_at = models.DateTimeField(_("expires at"))
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by_id = models.BigIntegerField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("enrolment token")
        verbose_name_plural = _("enrolment tokens")
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def audit_customer(self) -> Customer:
        return self.customer


class NodeAlert(models.Model):
    """Something administrators must be told about a node (host key changed, offline)."""

    scope_path_field = "customer_path"

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="alerts")
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    kind = models.CharField(max_length=32)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["resolved_at", "customer_path"], name="alert_open")]

    def __str__(self) -> str:
        return f"{self.node}: {self.kind}"


class MetricSample(models.Model):
    """CPU, memory, disks and uptime of a node at one time (raw or hourly average)."""

    RAW = "raw"
    HOURLY = "hour"

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="metrics")
    resolution = models.CharField(max_length=4, default=RAW)
    at = models.DateTimeField()
    cpu_percent = models.FloatField(null=True)
    load1 = models.FloatField(null=True)
    memory_total_kb = models.BigIntegerField(null=True)
    memory_available_kb = models.BigIntegerField(null=True)
    disks = models.JSONField(default=list)
    uptime_seconds = models.FloatField(null=True)
    # Raw /proc/stat counters, so the next sample can compute CPU use over the interval.
    cpu_total_ticks = models.BigIntegerField(null=True)
    cpu_idle_ticks = models.BigIntegerField(null=True)
    # Disk operations (physical disks) and network bytes (all but loopback) since boot,
    # and the rates computed from the previous sample: what the capacity page compares.
    disk_ios_total = models.BigIntegerField(null=True)
    net_bytes_total = models.BigIntegerField(null=True)
    disk_iops = models.FloatField(null=True)
    net_mbit = models.FloatField(null=True)

    class Meta:
        indexes = [models.Index(fields=["node", "resolution", "-at"], name="metric_node_at")]

    def __str__(self) -> str:
        return f"{self.node} at {self.at:%Y-%m-%d %H:%M}"

    @property
    def memory_percent(self) -> float | None:
        if not self.memory_total_kb or self.memory_available_kb is None:
            return None
        used = self.memory_total_kb - self.memory_available_kb
        return round(100.0 * used / self.memory_total_kb, 1)
