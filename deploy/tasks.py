"""Periodic node work (Celery beat): metrics sweeps and zone latency."""

from __future__ import annotations

from celery import shared_task

from . import latency, metrics


@shared_task(name="deploy.collect_metrics", acks_late=True)
def collect_metrics() -> dict[str, int]:
    return metrics.sweep()


@shared_task(name="deploy.measure_zone_latency", acks_late=True)
def measure_zone_latency() -> int:
    return latency.measure()
