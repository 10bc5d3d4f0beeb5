"""Periodic node work (Celery beat): metrics sweeps and zone latency."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from . import latency, metrics
from .rule_updates import jobs as rule_update_jobs  # noqa: F401  (registers deploy.update_rules)
from .services.nginx import tasks as nginx_tasks  # noqa: F401  (registers certificate renewal)


def _exclusive(name: str, timeout: int, work: Callable[[], Any]) -> Any:
    """Run ``work`` unless the same periodic work is still running elsewhere.

    A slow sweep must not pile up behind the next beat tick; the cache (Redis in
    production) holds the lock across workers.
    """
    key = f"ums:lock:{name}"
    if not cache.add(key, 1, timeout=timeout):
        return "skipped: still running"
    try:
        return work()
    finally:
        cache.delete(key)


@shared_task(name="deploy.collect_metrics", acks_late=True)
def collect_metrics() -> Any:
    return _exclusive("collect-metrics", settings.UMS_METRICS_INTERVAL * 5, metrics.sweep)


@shared_task(name="deploy.measure_zone_latency", acks_late=True)
def measure_zone_latency() -> Any:
    return _exclusive("zone-latency", 900, latency.measure)
