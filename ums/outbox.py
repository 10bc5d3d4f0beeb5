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
from django.db import connection, transaction
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
        row = _claim(outbox_id)
        if row is None:
            return False
        func = _CONSUMERS.get(row.topic)
        if func is None:
            logger.warning("outbox row %s: nobody consumes %r; dropped", row.pk, row.topic)
        else:
            func(row)
        with connection.cursor() as cursor:
            cursor.execute(_DONE_SQL, [timezone.now(), row.pk])
    return True


# Every create runs these two right after its commit: written once as SQL, because the
# ORM spent more CPU compiling them than PostgreSQL spends running them (issue 19). The
# same statements the querysets produced: the row locked, or skipped when another process
# holds it, and only while unprocessed.
_TABLE = Outbox._meta.db_table
_FIELDS = [field.attname for field in Outbox._meta.concrete_fields]
_CLAIM_SQL = (
    f"SELECT {', '.join(f.column for f in Outbox._meta.concrete_fields)} FROM {_TABLE} "  # noqa: S608
    "WHERE id = %s AND processed_at IS NULL FOR UPDATE SKIP LOCKED"
)
_DONE_SQL = f"UPDATE {_TABLE} SET processed_at = %s WHERE id = %s"  # noqa: S608


def _claim(outbox_id: int) -> Outbox | None:
    """The unprocessed row, locked until this transaction ends; None if done or taken."""
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [outbox_id])
        found = cursor.fetchone()
    if found is None:
        return None
    # Through each field's own conversion (the JSON payload), as a queryset would.
    values = [
        field.from_db_value(value, None, connection) if hasattr(field, "from_db_value") else value
        for field, value in zip(Outbox._meta.concrete_fields, found, strict=True)
    ]
    return Outbox.from_db(connection.alias, _FIELDS, values)


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
