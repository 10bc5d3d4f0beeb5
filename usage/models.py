"""Measured used space per mailbox, quota warnings, and the daily usage of every customer.

``MailboxUsage`` holds the current measurement (``mail.Mailbox.used_bytes`` mirrors the
bytes for the mail pages). ``DailyUsage`` is one row per customer per day with the
customer's own figures and the sums over its subtree: a year of 10,000 customers is 3.65M
narrow rows, read by the (customer, day) key.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from tenants.models import Customer

PATH_MAX = 1000


class MailboxUsage(models.Model):
    """The latest measurement of one mailbox and the highest quota warning already sent."""

    scope_path_field = "customer_path"

    mailbox = models.OneToOneField(
        "mail.Mailbox", primary_key=True, on_delete=models.CASCADE, related_name="usage"
    )
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    customer_path = models.CharField(max_length=PATH_MAX, editable=False)
    used_bytes = models.BigIntegerField(default=0)
    messages = models.BigIntegerField(default=0)
    # When the measured value last changed (unchanged measurements are not rewritten).
    measured_at = models.DateTimeField()
    # 0, 80 or 95: the threshold the last warning was about; lowered when usage drops, so
    # the next crossing warns again and a steady mailbox is warned once.
    warned_percent = models.PositiveSmallIntegerField(default=0)

    class Meta:
        verbose_name = _("mailbox usage")
        verbose_name_plural = _("mailbox usage")
        indexes = [models.Index(fields=["customer"], name="usage_mailbox_customer")]

    def __str__(self) -> str:
        return f"usage of mailbox {self.mailbox_id}"


class QuotaWarning(models.Model):
    """A mailbox crossed a quota threshold: shown in the portal while it holds, mailed once.

    Written in the same transaction as ``MailboxUsage.warned_percent``; ``mailed_at`` is set
    after the mail went out, so a worker killed in between mails it on the next run.
    """

    scope_path_field = "customer_path"

    mailbox = models.ForeignKey("mail.Mailbox", on_delete=models.CASCADE, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    customer_path = models.CharField(max_length=PATH_MAX, editable=False)
    percent = models.PositiveSmallIntegerField()
    used_bytes = models.BigIntegerField()
    quota_mb = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    mailed_at = models.DateTimeField(null=True, blank=True)
    # Cleared when the mailbox drops below the threshold again.
    is_open = models.BooleanField(default=True)

    class Meta:
        verbose_name = _("quota warning")
        verbose_name_plural = _("quota warnings")
        ordering = ("-created_at",)
        indexes = [
            models.Index(
                fields=["customer_path"],
                condition=models.Q(is_open=True),
                name="usage_warning_open",
            ),
            models.Index(
                fields=["created_at"],
                condition=models.Q(mailed_at__isnull=True),
                name="usage_warning_unmailed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.percent} % warning for mailbox {self.mailbox_id}"


# Figures of a snapshot, in the column order of DailyUsage (own_* and tree_* each).
FIGURES = (
    "mailboxes",
    "aliases",
    "domains",
    "quota_mb",
    "used_bytes",
    "held_messages",
    "files_bytes",
    "files_users",
    "chat_users",
)


def _figures(prefix: str) -> dict[str, models.BigIntegerField]:
    return {f"{prefix}_{name}": models.BigIntegerField(default=0) for name in FIGURES}


class DailyUsage(models.Model):
    """One customer on one day: its own figures (``own_*``) and its subtree's (``tree_*``)."""

    scope_path_field = "customer_path"

    # History outlives the customer (an ISP bills a customer deleted mid-month): no
    # database constraint, nothing cascades; reports then show the id for the name.
    customer = models.ForeignKey(
        Customer, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    customer_path = models.CharField(max_length=PATH_MAX, editable=False)
    parent_id_at_day = models.BigIntegerField(null=True, blank=True)
    day = models.DateField()
    taken_at = models.DateTimeField()
    locals().update(_figures("own"))
    locals().update(_figures("tree"))

    class Meta:
        verbose_name = _("daily usage")
        verbose_name_plural = _("daily usage")
        constraints = [
            models.UniqueConstraint(fields=["customer", "day"], name="usage_daily_customer_day")
        ]
        indexes = [models.Index(fields=["parent_id_at_day", "day"], name="usage_daily_children")]

    def __str__(self) -> str:
        return f"usage of customer {self.customer_id} on {self.day}"


class MonthlyReportRecipient(models.Model):
    """An administrator who gets a customer's usage report (by child) by mail each month.

    ``last_sent_month`` (the first day of the month reported) is set after the mail went
    out, so a run killed before it mails on the next run; no month is mailed twice unless a
    run dies between sending and marking.
    """

    scope_path_field = "customer_path"
    audit_fields = ("customer", "administrator")

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="+", verbose_name=_("customer")
    )
    customer_path = models.CharField(max_length=PATH_MAX, editable=False)
    administrator = models.ForeignKey(
        "tenants.Administrator",
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("administrator"),
    )
    last_sent_month = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("monthly report recipient")
        verbose_name_plural = _("monthly report recipients")
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "administrator"], name="usage_monthly_unique_recipient"
            )
        ]

    def __str__(self) -> str:
        return f"monthly usage report of customer {self.customer_id} to {self.administrator_id}"

    @property
    def audit_customer(self) -> Customer:
        return self.customer
