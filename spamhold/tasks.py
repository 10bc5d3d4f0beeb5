"""Periodic held-mail work (Celery beat): ingest every SMTP node, request the expiry of old
messages (re-driving requests is the reconciler's, ``spamhold.reconcile``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from . import actions, ingest


def _exclusive(name: str, timeout: int, work: Any) -> Any:
    """Skip a tick while the previous one still runs (the cache lock spans workers)."""
    key = f"ums:lock:{name}"
    if not cache.add(key, 1, timeout=timeout):
        return "skipped: still running"
    try:
        return work()
    finally:
        cache.delete(key)


@shared_task(name="spamhold.ingest_all", acks_late=True)
def ingest_all() -> Any:
    def work() -> dict[str, Any]:
        results = ingest.sweep()
        return {
            "nodes": len(results),
            "new": sum(r.new for r in results),
            "gone": sum(r.gone for r in results),
            "errors": {r.node_name: r.error for r in results if r.error},
        }

    return _exclusive("spamhold-ingest-all", settings.UMS_SPAMHOLD_INGEST_LOCK_SECONDS, work)


@shared_task(name="spamhold.expire", acks_late=True)
def expire() -> Any:
    # Only writes a request (its job and the reconciler do the node work), so the lock
    # lives minutes, not an hour, if a worker dies holding it.
    return _exclusive("spamhold-expire", 300, actions.expire_due)
