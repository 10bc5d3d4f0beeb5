"""Backup targets, snapshot policies and the snapshots nodes report.

A :class:`BackupTarget` belongs to a customer and is seen by that customer's subtree's
administrators above it (the one scoping rule). Its secrets are stored Fernet-encrypted
(:class:`ums.crypto.EncryptedTextField`) and never leave through the API or the portal.

:class:`Snapshot` rows are *observed* state: what an IMAP node reported the last time its
datasets were listed, never what the controller hopes exists.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from mail.models import Domain
from servers.models import Node
from tenants.models import Customer
from ums.crypto import EncryptedTextField
from ums.validators import no_control_characters, not_blank, trimmed

from . import validators as v
from .choices import MAX_KEEP, SnapshotTier, TargetKind, TierKind

_TEXT = [no_control_characters]

#: The fields each kind needs (non-blank) and may use.
KIND_REQUIRED = {
    TargetKind.S3: ("s3_endpoint", "s3_bucket", "s3_access_key", "s3_secret_key"),
    TargetKind.CIFS: ("cifs_server", "cifs_share", "cifs_username", "cifs_password"),
    TargetKind.NFS: ("nfs_path",),
}


class BackupTarget(models.Model):
    """Somewhere backups are written: an S3 bucket, an SMB share or a mounted NFS export."""

    scope_path_field = "customer_path"
    # Secrets are left out on purpose: the audit trail says that they changed, not what.
    audit_fields = (
        "name",
        "kind",
        "s3_endpoint",
        "s3_region",
        "s3_bucket",
        "s3_prefix",
        "s3_access_key",
        "s3_server_side_encryption",
        "cifs_server",
        "cifs_port",
        "cifs_share",
        "cifs_path",
        "cifs_username",
        "cifs_domain",
        "nfs_path",
    )

    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="+", verbose_name=_("customer")
    )
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    name = models.CharField(_("name"), max_length=100, validators=[*_TEXT, not_blank, trimmed])
    kind = models.CharField(_("kind"), max_length=8, choices=TargetKind.choices)

    s3_endpoint = models.CharField(
        _("endpoint URL"), max_length=300, blank=True, validators=[*_TEXT, v.endpoint_url]
    )
    s3_region = models.CharField(_("region"), max_length=63, blank=True, validators=[v.region])
    s3_bucket = models.CharField(_("bucket"), max_length=63, blank=True, validators=[v.bucket_name])
    s3_prefix = models.CharField(
        _("prefix"), max_length=300, blank=True, validators=[v.object_prefix]
    )
    s3_access_key = models.CharField(
        _("access key"), max_length=128, blank=True, validators=[*_TEXT, trimmed]
    )
    s3_secret_key = EncryptedTextField(_("secret key"), blank=True, validators=_TEXT)
    s3_server_side_encryption = models.BooleanField(_("server-side encryption"), default=False)

    cifs_server = models.CharField(_("server"), max_length=253, blank=True, validators=[v.hostname])
    cifs_port = models.PositiveIntegerField(
        _("port"), default=445, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    cifs_share = models.CharField(_("share"), max_length=80, blank=True, validators=[v.share_name])
    cifs_path = models.CharField(
        _("folder"), max_length=300, blank=True, validators=[v.relative_path]
    )
    cifs_username = models.CharField(
        _("user name"), max_length=104, blank=True, validators=[v.account_name]
    )
    cifs_password = EncryptedTextField(_("password"), blank=True, validators=_TEXT)
    cifs_domain = models.CharField(
        _("domain"), max_length=104, blank=True, validators=[v.account_name]
    )

    nfs_path = models.CharField(
        _("mounted path"), max_length=1000, blank=True, validators=[v.absolute_path]
    )

    last_test_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_test_ok = models.BooleanField(null=True, editable=False)
    last_test_message = models.CharField(max_length=1000, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("backup target")
        verbose_name_plural = _("backup targets")
        ordering = ("name", "id")
        constraints = [
            models.UniqueConstraint("customer", "name", name="backup_target_unique_name")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def audit_customer(self) -> Customer:
        return self.customer

    def clean(self) -> None:
        """Every field the kind needs, all missing ones reported at once."""
        missing = {
            field: _("Required for this kind of target.")
            for field in KIND_REQUIRED.get(self.kind, ())
            if not getattr(self, field)
        }
        if missing:
            raise ValidationError(missing)

    @property
    def location(self) -> str:
        """Where it writes, for lists (no secrets)."""
        if self.kind == TargetKind.S3:
            prefix = f"/{self.s3_prefix.strip('/')}" if self.s3_prefix else ""
            return f"{self.s3_endpoint.rstrip('/')}/{self.s3_bucket}{prefix}"
        if self.kind == TargetKind.CIFS:
            folder = f"/{self.cifs_path.strip('/')}" if self.cifs_path else ""
            return f"//{self.cifs_server}:{self.cifs_port}/{self.cifs_share}{folder}"
        return self.nfs_path


def _keep_validators(field: str) -> list:
    return [MinValueValidator(0), MaxValueValidator(MAX_KEEP[field])]


class SnapshotPolicy(models.Model):
    """A customer's snapshot retention; unset fields inherit from the customer above."""

    scope_path_field = "customer_path"
    audit_fields = ("enabled", "hourly_keep", "daily_keep", "monthly_keep", "manual_keep_days")

    customer = models.OneToOneField(
        Customer, on_delete=models.CASCADE, related_name="+", verbose_name=_("customer")
    )
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    enabled = models.BooleanField(_("snapshots enabled"), null=True, blank=True)
    hourly_keep = models.PositiveIntegerField(
        _("hourly snapshots kept"),
        null=True,
        blank=True,
        validators=_keep_validators("hourly_keep"),
    )
    daily_keep = models.PositiveIntegerField(
        _("daily snapshots kept"), null=True, blank=True, validators=_keep_validators("daily_keep")
    )
    monthly_keep = models.PositiveIntegerField(
        _("monthly snapshots kept"),
        null=True,
        blank=True,
        validators=_keep_validators("monthly_keep"),
    )
    #: On-demand snapshots older than this many days are destroyed by the scheduled
    #: pass (0: kept until deleted).
    manual_keep_days = models.PositiveIntegerField(
        _("days on-demand snapshots are kept"),
        null=True,
        blank=True,
        validators=_keep_validators("manual_keep_days"),
    )

    class Meta:
        verbose_name = _("snapshot policy")
        verbose_name_plural = _("snapshot policies")

    def __str__(self) -> str:
        return f"snapshot policy of {self.customer}"

    @property
    def audit_customer(self) -> Customer:
        return self.customer


class Snapshot(models.Model):
    """A ZFS snapshot of a domain's dataset as the node last reported it."""

    scope_path_field = "customer_path"

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    domain = models.ForeignKey(
        Domain, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    customer_path = models.CharField(max_length=1000, db_index=True)
    dataset = models.CharField(max_length=400)
    name = models.CharField(max_length=100)
    tier = models.CharField(max_length=8, choices=SnapshotTier.choices)
    taken_at = models.DateTimeField()
    used_bytes = models.BigIntegerField(default=0)
    referenced_bytes = models.BigIntegerField(default=0)
    observed_at = models.DateTimeField()

    class Meta:
        ordering = ("-taken_at", "id")
        constraints = [
            models.UniqueConstraint("node", "dataset", "name", name="backup_snapshot_unique")
        ]
        indexes = [models.Index(fields=["domain", "-taken_at"], name="backup_snap_domain")]

    def __str__(self) -> str:
        return f"{self.dataset}@{self.name}"


# ------------------------------------------------------------------ controller dumps


class Dump(models.Model):
    """A controller dump as its target's manifest last described it (observed state).

    The target is the truth (:mod:`backup.dumps`): these rows are rewritten from the
    manifests each time a dump job or a check job reads the target.
    """

    scope_path_field = "customer_path"
    OK, WRITTEN, DAMAGED, UNREADABLE = "ok", "written", "damaged", "unreadable"
    STATUSES = (
        (OK, _("verified")),
        (WRITTEN, _("written, not verified since")),
        (DAMAGED, _("checksum mismatch")),
        (UNREADABLE, _("manifest unreadable")),
    )

    target = models.ForeignKey(BackupTarget, on_delete=models.CASCADE, related_name="+")
    customer_path = models.CharField(max_length=1000, db_index=True)
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(null=True)
    size_bytes = models.BigIntegerField(default=0)
    object_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=12, choices=STATUSES, default=WRITTEN)
    status_message = models.CharField(max_length=2000, blank=True)
    checked_at = models.DateTimeField(null=True)
    observed_at = models.DateTimeField()

    class Meta:
        ordering = ("-created_at", "id")
        constraints = [models.UniqueConstraint("target", "name", name="backup_dump_unique")]

    def __str__(self) -> str:
        return self.name


# ----------------------------------------------------------- exports and purges (items 7, 8)


class Export(models.Model):
    """A Maildir tar of one mailbox (or a whole domain when ``local_part`` is blank),
    written encrypted to a target or kept encrypted on the controller for a download link.

    The names are copied, not only linked: a purge must still find the export after the
    mailbox or the domain rows are gone.
    """

    PENDING, RUNNING, READY, FAILED, EXPIRED, PURGED = (
        "pending",
        "running",
        "ready",
        "failed",
        "expired",
        "purged",
    )
    STATUSES = [
        (PENDING, _("Pending")),
        (RUNNING, _("Running")),
        (READY, _("Ready")),
        (FAILED, _("Failed")),
        (EXPIRED, _("Expired")),
        (PURGED, _("Permanently deleted")),
    ]
    scope_path_field = "customer_path"
    audit_fields = ("domain_name", "local_part", "snapshot_name", "status", "object_name")

    token = models.CharField(max_length=64, unique=True, editable=False)
    customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    customer_path = models.CharField(max_length=1000, db_index=True)
    domain = models.ForeignKey(
        Domain, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    domain_name = models.CharField(max_length=253, db_index=True)
    local_part = models.CharField(max_length=64, blank=True)
    snapshot_name = models.CharField(max_length=100, blank=True)
    node = models.ForeignKey(Node, on_delete=models.SET_NULL, null=True, related_name="+")
    target = models.ForeignKey(
        BackupTarget, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    object_name = models.CharField(max_length=512, blank=True)
    file_name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=8, choices=STATUSES, default=PENDING)
    job = models.ForeignKey("ums.Job", on_delete=models.SET_NULL, null=True, related_name="+")
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    error = models.CharField(max_length=1000, blank=True)
    requested_by_name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.local_part}@{self.domain_name}" if self.local_part else self.domain_name

    @property
    def audit_customer(self) -> Customer | None:
        return self.customer


class Purge(models.Model):
    """A permanent deletion in progress or done: what a re-run after a crash resumes.

    Holds names, never content; ``done`` lists the steps completed (for the record).
    """

    domain_name = models.CharField(max_length=253)
    local_part = models.CharField(max_length=64, blank=True)
    customer_path = models.CharField(max_length=1000, blank=True)
    node = models.ForeignKey(Node, on_delete=models.SET_NULL, null=True, related_name="+")
    done = models.JSONField(default=list)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-started_at",)

    def __str__(self) -> str:
        return f"{self.local_part}@{self.domain_name}" if self.local_part else self.domain_name


class BackupExclusion(models.Model):
    """What one customer, domain or mailbox leaves out of backups (exactly one is set).

    Exclusions only add up down the tree (see :mod:`backup.exclusion_policy`): a level
    below cannot take back what a level above left out. Kept here rather than on the mail
    models so the mail app's schema does not change for a backup concern.
    """

    scope_path_field = "customer_path"
    audit_fields = ("excluded", "folders")

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    domain = models.ForeignKey(
        Domain, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    mailbox = models.ForeignKey(
        "mail.Mailbox", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    excluded = models.BooleanField(_("excluded from backups"), default=False)
    #: Maildir++ folder names without the leading dot (customer and domain levels).
    folders = models.JSONField(_("excluded folders"), default=list, blank=True)

    class Meta:
        verbose_name = _("backup exclusion")
        verbose_name_plural = _("backup exclusions")
        constraints = [
            models.UniqueConstraint("customer", name="backup_excl_customer"),
            models.UniqueConstraint("domain", name="backup_excl_domain"),
            models.UniqueConstraint("mailbox", name="backup_excl_mailbox"),
            models.CheckConstraint(
                condition=(
                    models.Q(customer__isnull=False, domain__isnull=True, mailbox__isnull=True)
                    | models.Q(customer__isnull=True, domain__isnull=False, mailbox__isnull=True)
                    | models.Q(customer__isnull=True, domain__isnull=True, mailbox__isnull=False)
                ),
                name="backup_excl_one_target",
            ),
        ]

    def __str__(self) -> str:
        return f"backup exclusion of {self.customer or self.domain or self.mailbox}"

    @property
    def audit_customer(self) -> Customer:
        if self.customer is not None:
            return self.customer
        return (self.domain or self.mailbox).customer


class MailStoreSettings(models.Model):
    """One IMAP node's mail store settings; blank/``None`` fields keep UMS_NODE_SETTINGS
    (compression, dedup) or the customers' snapshot policy (the snapshot fields)."""

    scope_path_field = "customer_path"
    audit_fields = (
        "compression",
        "dedup",
        "enabled",
        "hourly_keep",
        "daily_keep",
        "monthly_keep",
        "tier_days",
        "tier_kind",
        "tier_path",
        "tier_target",
        "tier_recall",
    )

    node = models.OneToOneField(Node, on_delete=models.CASCADE, related_name="+")
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    compression = models.CharField(_("compression"), max_length=16, blank=True)
    dedup = models.CharField(_("deduplication"), max_length=8, blank=True)
    # The snapshot policy's own fields, cloned so the two stay in step.
    enabled = SnapshotPolicy._meta.get_field("enabled").clone()
    hourly_keep = SnapshotPolicy._meta.get_field("hourly_keep").clone()
    daily_keep = SnapshotPolicy._meta.get_field("daily_keep").clone()
    monthly_keep = SnapshotPolicy._meta.get_field("monthly_keep").clone()
    # Storage tiering (backup/tiering.py): messages idle for tier_days move to the tier.
    tier_days = models.PositiveIntegerField(
        _("tier after days idle"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(36500)],
    )
    tier_kind = models.CharField(_("tier"), max_length=8, blank=True, choices=TierKind.choices)
    tier_path = models.CharField(
        _("tier folder"), max_length=300, blank=True, validators=[v.absolute_path]
    )
    tier_target = models.ForeignKey(
        BackupTarget,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("tier S3 target"),
    )
    tier_recall = models.BooleanField(_("bring read messages back"), default=False)

    class Meta:
        verbose_name = _("mail store settings")
        verbose_name_plural = _("mail store settings")

    def __str__(self) -> str:
        return f"mail store of {self.node}"

    @property
    def audit_customer(self) -> Customer:
        return self.node.customer


class TierUsage(models.Model):
    """Observed bytes and messages of one domain on its mail store and on its tier, as the
    last tiering pass of its node measured them (it walks every message anyway)."""

    scope_path_field = "customer_path"

    domain = models.OneToOneField(Domain, on_delete=models.CASCADE, related_name="+")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    primary_bytes = models.BigIntegerField(default=0)
    primary_messages = models.BigIntegerField(default=0)
    tier_bytes = models.BigIntegerField(default=0)
    tier_messages = models.BigIntegerField(default=0)
    tier_kind = models.CharField(max_length=8, blank=True)
    measured_at = models.DateTimeField()

    class Meta:
        verbose_name = _("tier usage")
        verbose_name_plural = _("tier usage")

    def __str__(self) -> str:
        return f"tier usage of {self.domain_id}"


# Off-node copies live in their own module; imported here so Django registers them.
from .models_offnode import OffnodeCopy, OffnodeSetting  # noqa: E402, F401
