"""The cloud database reconciler as a Celery beat task."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="clouddb.reconcile", acks_late=True)
def reconcile_clouddb() -> Any:
    from .reconcile import run

    return run()
