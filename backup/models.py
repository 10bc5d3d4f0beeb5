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
from .choices import MAX_KEEP, SnapshotTier, TargetKind

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
    audit_fields = ("enabled", "hourly_keep", "daily_keep", "monthly_keep")

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


# Off-node copies live in their own module; imported here so Django registers them.
from .models_offnode import OffnodeCopy, OffnodeSetting  # noqa: E402, F401
