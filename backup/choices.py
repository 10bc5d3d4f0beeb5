"""Choices of the backup app."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class TargetKind(models.TextChoices):
    S3 = "s3", _("S3 object storage")
    CIFS = "cifs", _("CIFS (SMB share)")
    NFS = "nfs", _("NFS (mounted directory)")


class TierKind(models.TextChoices):
    FOLDER = "folder", _("mounted folder (NFS, CIFS or FUSE)")
    S3 = "s3", _("S3 bucket through s3fs")


class SnapshotTier(models.TextChoices):
    HOURLY = "hourly", _("hourly")
    DAILY = "daily", _("daily")
    MONTHLY = "monthly", _("monthly")
    MANUAL = "manual", _("on demand")


#: Built-in retention when no customer of the chain sets one: hourly ×24, daily ×30,
#: monthly ×12 (0 turns a tier off), and on-demand ("Snapshot now") snapshots kept 30
#: days (0: kept until deleted).
POLICY_DEFAULTS = {"hourly_keep": 24, "daily_keep": 30, "monthly_keep": 12, "manual_keep_days": 30}
POLICY_FIELDS = tuple(POLICY_DEFAULTS)
MAX_KEEP = {
    "hourly_keep": 24 * 14,
    "daily_keep": 366,
    "monthly_keep": 120,
    "manual_keep_days": 3660,
}
