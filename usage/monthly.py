"""The monthly usage report by mail: on or after the first of a month, each recipient gets
the past month's report of their customer by child customer (the table in the text, the
CSV attached). Run by beat every UMS_USAGE_SNAPSHOT_INTERVAL; a recipient already sent the
month is skipped, so any number of runs sends each month once (a run dying between sending
and marking sends that one again)."""

from __future__ import annotations

import datetime
import logging
import smtplib

from django.conf import settings
from django.core.mail import EmailMessage
from django.db.models import Q
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from ums import csvsafe

from . import report
from .models import MonthlyReportRecipient

logger = logging.getLogger(__name__)


def previous_month(today: datetime.date) -> tuple[datetime.date, datetime.date]:
    end = today.replace(day=1) - datetime.timedelta(days=1)
    return end.replace(day=1), end


def _message(recipient: MonthlyReportRecipient, start: datetime.date, end: datetime.date):
    customer = recipient.customer
    lines = report.build(customer, start, end, report.CHILD)
    values = {"customer": customer.name, "month": start.strftime("%Y-%m")}
    subject = _("Usage of %(customer)s in %(month)s") % values
    table = "\n".join(
        _("%(name)s: %(mailboxes)s mailboxes, %(allocated)s allocated, %(used)s used")
        % {
            "name": line.label,
            "mailboxes": report.display("mailboxes", line.average["mailboxes"]),
            "allocated": report.display("quota_mb", line.average["quota_mb"]),
            "used": report.display("used_bytes", line.average["used_bytes"]),
        }
        for line in lines
    )
    body = (
        _("Average over %(month)s per child customer (the attached CSV has the peaks too):")
        % values
        + "\n\n"
        + (table or _("No snapshot in this period yet: they are taken every day."))
        + "\n"
    )
    attachment = "".join(
        csvsafe.stream_rows(report.csv_header(report.CHILD), report.csv_rows(lines, report.CHILD))
    )
    message = EmailMessage(subject, body, None, [recipient.administrator.email])
    message.attach(f"usage-{customer.pk}-{values['month']}.csv", attachment, "text/csv")
    return message


def send_due(today: datetime.date | None = None) -> int:
    """Mail last month's report to every recipient not sent it yet; how many were sent."""
    start, end = previous_month(today or timezone.now().date())
    due = (
        MonthlyReportRecipient.objects.filter(
            Q(last_sent_month__isnull=True) | Q(last_sent_month__lt=start),
            administrator__is_active=True,
        )
        .select_related("customer", "administrator")
        .order_by("id")
    )
    sent = 0
    for recipient in due:
        admin = recipient.administrator
        if not recipient.customer.path.startswith(admin.customer_path):
            continue  # moved out of the administrator's reach since: never mail it
        with translation.override(admin.language or settings.LANGUAGE_CODE):
            message = _message(recipient, start, end)
        try:
            message.send()
        except (OSError, smtplib.SMTPException):
            logger.warning("monthly usage report not sent; retried next run", exc_info=True)
            break
        MonthlyReportRecipient.objects.filter(pk=recipient.pk).update(last_sent_month=start)
        sent += 1
    return sent
