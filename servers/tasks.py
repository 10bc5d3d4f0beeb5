"""Periodic housekeeping of server data (Celery beat)."""

from __future__ import annotations

from celery import shared_task

from . import retention


@shared_task(name="servers.downsample_metrics")
def downsample_metrics() -> dict[str, int]:
    return retention.downsample_and_purge()
