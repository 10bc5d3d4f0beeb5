"""The outbox: intents written in the user's transaction, consumed exactly once.

An app that must not import the one acting on its changes (``mail`` and ``deploy``,
DESIGN.md) appends an :class:`~ums.models.Outbox` row in its own transaction with
:func:`write`. The consuming app registers a function per topic with :func:`consumer`;
it runs right after commit (the app's signal receiver calls :func:`process`) and, if that
was lost with its process, from the ``outbox`` reconciler a few seconds later. A row is
marked processed in the same transaction as the consumer's own writes, so a crash either
leaves both undone (and the reconciler runs it again) or both done.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from ums.models import Outbox
from ums.reconcile import register

logger = logging.getLogger(__name__)

Consumer = Callable[[Outbox], None]
_CONSUMERS: dict[str, Consumer] = {}
#: Rows younger than this are left to the after-commit path (racing it is harmless but
#: wasted work).
RECONCILE_AFTER = datetime.timedelta(seconds=5)
BATCH = 500
#: Processed rows are kept this long (to see what was consumed when), then deleted by the
#: reconciler, at most once an hour and PURGE_BATCH rows at a time.
KEEP_PROCESSED = datetime.timedelta(days=7)
PURGE_EVERY = 3600
PURGE_BATCH = 10_000


def consumer(topic: str) -> Callable[[Consumer], Consumer]:
    """Register the function that consumes rows of ``topic`` (inside a transaction)."""

    def register_consumer(func: Consumer) -> Consumer:
        _CONSUMERS[topic] = func
        return func

    return register_consumer


def write(topic: str, customer_path: str, payload: dict[str, Any]) -> Outbox:
    """Append an intent; call inside the transaction of the change it announces."""
    return Outbox.objects.create(topic=topic, customer_path=customer_path, payload=payload)


def process(outbox_id: int) -> bool:
    """Consume one row unless another process has or is doing it; True if this call did."""
    with transaction.atomic():
        row = (
            Outbox.objects.select_for_update(skip_locked=True)
            .filter(pk=outbox_id, processed_at__isnull=True)
            .first()
        )
        if row is None:
            return False
        func = _CONSUMERS.get(row.topic)
        if func is None:
            logger.warning("outbox row %s: nobody consumes %r; dropped", row.pk, row.topic)
        else:
            func(row)
        Outbox.objects.filter(pk=row.pk).update(processed_at=timezone.now())
    return True


@register("outbox")
def process_pending() -> dict[str, Any]:
    """Rows whose after-commit consumption was lost (the web process died in between)."""
    cutoff = timezone.now() - RECONCILE_AFTER
    ids = list(
        Outbox.objects.filter(processed_at__isnull=True, created_at__lt=cutoff)
        .order_by("created_at")
        .values_list("pk", flat=True)[:BATCH]
    )
    done = failed = 0
    for pk in ids:
        try:
            done += process(pk)
        except Exception:
            failed += 1
            logger.exception("outbox row %s failed; retried next pass", pk)
    purged = purge_processed() if cache.add(_purge_key(), 1, timeout=PURGE_EVERY) else 0
    report = {"processed": done, "failed": failed, "purged": purged}
    return {k: v for k, v in report.items() if v}


def _purge_key() -> str:
    # One purge per hour across every worker sharing the cache (per database).
    return f"ums:outbox-purge:{settings.DATABASES['default']['NAME']}"


def purge_processed() -> int:
    """Delete up to PURGE_BATCH rows processed more than KEEP_PROCESSED ago."""
    cutoff = timezone.now() - KEEP_PROCESSED
    old = Outbox.objects.filter(processed_at__lt=cutoff).values("pk")[:PURGE_BATCH]
    deleted, _by_model = Outbox.objects.filter(pk__in=old).delete()
    return deleted
