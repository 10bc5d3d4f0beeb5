"""The reconciler loop: level-triggered repair of everything a dead process left undone.

Apps register *reconcilers*: cheap functions that compare what the database says should be
(durable intents, dirty nodes, pending jobs) with what has been confirmed, and re-drive the
difference. ``run_all`` calls every registered reconciler once; Celery beat runs it every
few seconds (``ums.reconcile``), and the embedded runner of ``make run`` does the same.

A reconciler must be:

* idempotent: running it twice, or in two processes at once, changes nothing the second
  time (claim work with conditional UPDATEs, never with "read then write");
* cheap when nothing is pending: one indexed query that finds nothing;
* bounded: it re-drives work by enqueueing jobs, it does not do node work itself.

Apps put their reconcilers in ``<app>/reconcile.py``; :func:`load` imports those modules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from importlib import import_module
from typing import Any

from django.apps import apps

logger = logging.getLogger(__name__)

Reconciler = Callable[[], dict[str, Any] | None]
_REGISTRY: dict[str, Reconciler] = {}
_loaded = False


def register(name: str) -> Callable[[Reconciler], Reconciler]:
    """Register ``func`` as the reconciler called ``name`` (unique across the project)."""

    def decorate(func: Reconciler) -> Reconciler:
        _REGISTRY[name] = func
        return func

    return decorate


def load() -> None:
    """Import every app's ``reconcile`` module so its reconcilers are registered."""
    global _loaded
    if _loaded:
        return
    # The ums app's own reconcile module is this one; its reconcilers live beside it.
    import_module("ums.job_reconcile")
    import_module("ums.outbox")
    for config in apps.get_app_configs():
        try:
            import_module(f"{config.name}.reconcile")
        except ModuleNotFoundError as exc:
            if exc.name != f"{config.name}.reconcile":
                raise
    _loaded = True


def registered() -> list[str]:
    load()
    return sorted(_REGISTRY)


def run_all() -> dict[str, Any]:
    """One pass of every reconciler; a failing one is logged and does not stop the others.

    Returns ``{name: result or {"error": ...}}`` with each reconciler's duration in ms.
    """
    load()
    report: dict[str, Any] = {}
    for name, func in sorted(_REGISTRY.items()):
        started = time.perf_counter()
        try:
            result = func() or {}
        except Exception as exc:
            logger.exception("reconciler %s failed", name)
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["ms"] = round((time.perf_counter() - started) * 1000, 2)
        report[name] = result
    return report
