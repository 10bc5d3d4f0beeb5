"""Beat tasks of usage: measure used space on the IMAP nodes, take today's snapshot."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from deploy.tasks import _exclusive

from . import collect, monthly, snapshot


@shared_task(name="usage.collect_used_space", acks_late=True)
def collect_used_space() -> Any:
    return _exclusive("usage-collect", settings.UMS_USAGE_COLLECT_INTERVAL * 5, collect.sweep)


@shared_task(name="usage.take_snapshot", acks_late=True)
def take_snapshot() -> Any:
    # The last run of a day wins: each run rewrites today's rows (one transaction).
    return _exclusive("usage-snapshot", 3600, snapshot.take)


@shared_task(name="usage.send_monthly_reports", acks_late=True)
def send_monthly_reports() -> Any:
    return _exclusive("usage-monthly", 3600, monthly.send_due)
