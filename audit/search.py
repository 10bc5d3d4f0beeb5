"""Searching audit records: filters shared by the API and the portal.

Free text uses PostgreSQL full-text search over a generated ``search_vector`` column (GIN
index, raised planner statistics, see migration 0002).
"""

from __future__ import annotations

import datetime
from typing import Any

from django.db import models
from django.db.models import BooleanField, Func, Value

from .models import AuditActorName, AuditRecord


class _FullTextMatch(Func):
    """``<table>.search_vector @@ plainto_tsquery('simple', text)`` (the column is added by
    migration 0002, not a model field). The table is named by the alias the query gives
    it at compile time, so the condition stays right inside a sub-select, where Django
    renames the table (``U0``): a page is read key first that way (``audit.models``)."""

    output_field = BooleanField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        alias = compiler.quote_name_unless_alias(compiler.query.get_initial_alias())
        text_sql, params = compiler.compile(self.source_expressions[0])
        return f"{alias}.search_vector @@ plainto_tsquery('simple', {text_sql})", list(params)


def full_text(queryset: models.QuerySet, text: str) -> models.QuerySet:
    text = text.strip()
    if not text:
        return queryset
    return queryset.filter(_FullTextMatch(Value(text)))


# More names than this containing one substring: match the records' names directly.
ACTOR_NAMES_MAX = 500


def actor_names(needle: str) -> list[str] | models.QuerySet:
    """Every actor name containing ``needle`` (case ignored), from ``AuditActorName``.

    The table holds each distinct name of the records (a trigger keeps it complete, see
    migration 0006), so ``actor_name IN (these)`` selects exactly the records whose name
    contains the needle, and the ``(actor_name, seq)`` index answers it. Past
    :data:`ACTOR_NAMES_MAX` names the sub-select is used as is (still exact).
    """
    names = AuditActorName.objects.filter(name__icontains=needle).values_list("name", flat=True)
    found = list(names[: ACTOR_NAMES_MAX + 1])
    return names if len(found) > ACTOR_NAMES_MAX else found


def apply_filters(
    queryset: models.QuerySet,
    *,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    object_type: str | None = None,
    customer_path: str | None = None,
    text: str | None = None,
) -> models.QuerySet:
    """Narrow an (already scoped) queryset of audit records."""
    if since is not None:
        queryset = queryset.filter(timestamp__gte=since)
    if until is not None:
        queryset = queryset.filter(timestamp__lt=until)
    if actor:
        if actor.isdigit():
            queryset = queryset.filter(actor_id=int(actor))
        else:
            queryset = queryset.filter(actor_name__in=actor_names(actor))
    if action:
        # "customer." means every customer action; a full name is an exact (indexed) match.
        if action.endswith("."):
            queryset = queryset.filter(action__startswith=action)
        else:
            queryset = queryset.filter(action=action)
    if object_type:
        queryset = queryset.filter(object_type=object_type)
    if customer_path:
        queryset = queryset.filter(customer_path__startswith=customer_path)
    if text:
        queryset = full_text(queryset, text)
    return queryset


def distinct_actions() -> list[str]:
    return list(AuditRecord.objects.order_by().values_list("action", flat=True).distinct()[:200])


def export_row(record: AuditRecord) -> list[Any]:
    return [
        record.seq,
        record.timestamp.isoformat(),
        record.actor_name,
        record.source_ip or "",
        record.channel,
        record.request_id,
        record.action,
        record.object_type,
        record.object_id,
        record.object_repr,
        record.customer_id or "",
        record.changes,
    ]


EXPORT_HEADER = [
    "seq",
    "time",
    "actor",
    "source_ip",
    "channel",
    "request_id",
    "action",
    "object_type",
    "object_id",
    "object",
    "customer_id",
    "changes",
]
