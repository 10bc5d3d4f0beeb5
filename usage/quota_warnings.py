"""Quota warnings: a mailbox crossing 80 % or 95 % of its quota is shown to its customer's
administrators in the portal and mailed to them once per crossing.

``MailboxUsage.warned_percent`` remembers the threshold last warned about; a warning row is
written only when a measurement lands above it (and the mark lowered when usage drops, so a
later crossing warns again). The mail goes out after commit from the rows not yet mailed:
a worker killed before sending mails them on the next run; one killed between sending and
marking sends that one mail twice (at least once, never lost).
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from tenants.models import Administrator, Customer
from tenants.permissions import MAIL_VIEW
from ums.portal.notices import Notice

from .models import QuotaWarning

logger = logging.getLogger(__name__)
THRESHOLDS = (80, 95)
_BATCH = 500


def evaluate(mailbox_ids: Iterable[int]) -> int:
    """Compare fresh measurements (and current quotas) with the thresholds; new warnings
    written. One statement for any number of mailboxes; call inside the transaction that
    stored the measurements."""
    ids = list(mailbox_ids)
    if not ids:
        return 0
    low, high = THRESHOLDS
    with connection.cursor() as cursor:
        # Data-modifying CTEs run once each, all on the same snapshot: raise or lower the
        # marks, close warnings no longer true, open one per rise.
        cursor.execute(
            """
            WITH levels AS (
                SELECT u.mailbox_id, u.warned_percent AS old, u.used_bytes, m.quota_mb,
                    m.customer_id, m.customer_path,
                    CASE WHEN m.quota_mb = 0 THEN 0
                         WHEN u.used_bytes * 100 >= %(high)s::bigint * m.quota_mb * 1048576
                              THEN %(high)s
                         WHEN u.used_bytes * 100 >= %(low)s::bigint * m.quota_mb * 1048576
                              THEN %(low)s
                         ELSE 0 END AS level
                FROM usage_mailboxusage u JOIN mail_mailbox m ON m.id = u.mailbox_id
                WHERE u.mailbox_id = ANY(%(ids)s)
            ), changed AS (
                SELECT * FROM levels WHERE level <> old
            ), marked AS (
                UPDATE usage_mailboxusage u SET warned_percent = c.level FROM changed c
                WHERE u.mailbox_id = c.mailbox_id
            ), closed AS (
                UPDATE usage_quotawarning w SET is_open = false FROM changed c
                WHERE w.mailbox_id = c.mailbox_id AND w.is_open AND w.percent <> c.level
            )
            INSERT INTO usage_quotawarning (mailbox_id, customer_id, customer_path, percent,
                used_bytes, quota_mb, created_at, mailed_at, is_open)
            SELECT mailbox_id, customer_id, customer_path, level, used_bytes, quota_mb, now(),
                NULL, true
            FROM changed WHERE level > old
            """,
            {"high": high, "low": low, "ids": ids},
        )
        return cursor.rowcount


def recipients(customer: Customer) -> list[Administrator]:
    """Active administrators with mail access at the nearest customer (itself first, then
    up the tree) that has any: a customer's own people, else whoever looks after it."""
    ids = [int(part) for part in customer.path.strip("/").split("/")]
    admins = Administrator.objects.filter(
        customer_id__in=ids, is_active=True, permissions__contains=[MAIL_VIEW]
    ).exclude(email="")
    by_customer: dict[int, list[Administrator]] = {}
    for admin in admins:
        by_customer.setdefault(admin.customer_id, []).append(admin)
    for pk in reversed(ids):
        if by_customer.get(pk):
            return by_customer[pk]
    return []


def _message(warning: QuotaWarning) -> tuple[str, str]:
    mailbox = warning.mailbox
    values = {
        "email": mailbox.email,
        "percent": warning.percent,
        "used": round(warning.used_bytes / 1048576),
        "quota": warning.quota_mb,
        "url": settings.BASE_URL + reverse("mail:mailbox-edit", args=[mailbox.pk]),
    }
    subject = _("Mailbox %(email)s is over %(percent)d %% of its quota") % values
    body = (
        _(
            "The mailbox %(email)s uses %(used)d MB of its %(quota)d MB quota (over %(percent)d "
            "%%). When it is full, new mail to it is refused.\n\nRaise the quota or ask its user "
            "to delete mail: %(url)s\n"
        )
        % values
    )
    return subject, body


def send_pending() -> int:
    """Mail the warnings not mailed yet; how many were mailed."""
    sent = 0
    pending = (
        QuotaWarning.objects.filter(mailed_at__isnull=True)
        .select_related("mailbox", "customer")
        .order_by("created_at")[:_BATCH]
    )
    for warning in pending:
        try:
            for admin in recipients(warning.customer):
                with translation.override(admin.language or settings.LANGUAGE_CODE):
                    subject, body = _message(warning)
                send_mail(subject, body, None, [admin.email])
        except (OSError, smtplib.SMTPException):
            # The mail server is away: these stay unmailed and go out on the next run.
            logger.warning("quota warning mail not sent; retried next run", exc_info=True)
            break
        with transaction.atomic():
            QuotaWarning.objects.filter(pk=warning.pk).update(mailed_at=timezone.now())
        sent += 1
    return sent


def quota_notices(user: Any) -> list[Notice]:
    """The portal banner: mailboxes in the user's scope now over a quota threshold."""
    if not getattr(user, "is_authenticated", False) or not hasattr(user, "has_permission"):
        return []
    if not user.has_permission(MAIL_VIEW):
        return []
    open_rows = QuotaWarning.objects.filter(
        is_open=True, customer_path__startswith=user.customer_path
    )
    count = open_rows.values("mailbox_id").distinct().count()
    if not count:
        return []
    text = ngettext(
        "%(count)d mailbox is over %(percent)d %% of its quota.",
        "%(count)d mailboxes are over %(percent)d %% of their quota.",
        count,
    ) % {"count": count, "percent": THRESHOLDS[0]}
    level = "error" if open_rows.filter(percent__gte=THRESHOLDS[1]).exists() else "warning"
    return [Notice(level, text, reverse("usage:quota-warnings"), _("Quota warnings"))]
