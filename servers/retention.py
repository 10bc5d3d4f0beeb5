"""Metric history: raw samples for a day, hourly averages for the retention period."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db.models import Avg, Max
from django.db.models.functions import TruncHour
from django.utils import timezone

from .models import MetricSample

RAW_KEEP = datetime.timedelta(hours=26)


def downsample_and_purge(now: datetime.datetime | None = None) -> dict[str, int]:
    """Average finished hours into hourly rows, then drop old raw and expired hourly rows."""
    now = now or timezone.now()
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    done = (
        MetricSample.objects.filter(resolution=MetricSample.RAW, at__lt=current_hour)
        .annotate(hour=TruncHour("at"))
        .values("node_id", "hour")
        .annotate(
            cpu=Avg("cpu_percent"),
            iops=Avg("disk_iops"),
            mbit=Avg("net_mbit"),
            load=Avg("load1"),
            mem_total=Max("memory_total_kb"),
            mem_available=Avg("memory_available_kb"),
            uptime=Max("uptime_seconds"),
            last=Max("at"),
        )
    )
    existing = set(
        MetricSample.objects.filter(resolution=MetricSample.HOURLY).values_list("node_id", "at")
    )
    hourly = []
    for row in done:
        if (row["node_id"], row["hour"]) in existing:
            continue
        last = MetricSample.objects.filter(node_id=row["node_id"], at=row["last"]).first()
        hourly.append(
            MetricSample(
                node_id=row["node_id"],
                resolution=MetricSample.HOURLY,
                at=row["hour"],
                cpu_percent=row["cpu"],
                disk_iops=row["iops"],
                net_mbit=row["mbit"],
                load1=row["load"],
                memory_total_kb=row["mem_total"],
                memory_available_kb=int(row["mem_available"]) if row["mem_available"] else None,
                uptime_seconds=row["uptime"],
                disks=last.disks if last else [],
            )
        )
    MetricSample.objects.bulk_create(hourly, batch_size=500)
    raw_deleted, _ = MetricSample.objects.filter(
        resolution=MetricSample.RAW, at__lt=now - RAW_KEEP
    ).delete()
    keep_days = datetime.timedelta(days=settings.UMS_METRICS_RETENTION_DAYS)
    hourly_deleted, _ = MetricSample.objects.filter(
        resolution=MetricSample.HOURLY, at__lt=now - keep_days
    ).delete()
    return {
        "hourly_created": len(hourly),
        "raw_deleted": raw_deleted,
        "hourly_deleted": hourly_deleted,
    }
