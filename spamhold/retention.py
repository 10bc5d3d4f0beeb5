"""How long held mail is kept: per customer, inherited down the tree.

A customer's retention is its own :class:`~spamhold.models.HoldRetention` row, else the
nearest ancestor's, else ``UMS_SPAMHOLD_RETENTION_DAYS``. Resolving many customers
costs one query.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from django.conf import settings

from .models import HoldRetention

MIN_DAYS = 1
MAX_DAYS = 3650


def default_days() -> int:
    return int(getattr(settings, "UMS_SPAMHOLD_RETENTION_DAYS", 30))


def ancestor_paths(path: str) -> list[str]:
    """``/1/5/12/`` -> ``["/1/", "/1/5/", "/1/5/12/"]`` (top first)."""
    ids = [part for part in (path or "").split("/") if part]
    return ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]


def days_for_paths(paths: Iterable[str]) -> dict[str, int]:
    """Effective retention in days for each customer path, in one query."""
    paths = set(paths)
    wanted: set[str] = set()
    for path in paths:
        wanted.update(ancestor_paths(path))
    rows = dict(
        HoldRetention.objects.filter(customer_path__in=wanted).values_list("customer_path", "days")
    )
    fallback = default_days()
    result = {}
    for path in paths:
        days = fallback
        for ancestor in ancestor_paths(path):
            days = rows.get(ancestor, days)
        result[path] = days
    return result


def effective(path: str) -> tuple[int, str | None]:
    """(days, path of the customer that set them, or None for the default)."""
    rows = dict(
        HoldRetention.objects.filter(customer_path__in=ancestor_paths(path)).values_list(
            "customer_path", "days"
        )
    )
    days, source = default_days(), None
    for ancestor in ancestor_paths(path):
        if ancestor in rows:
            days, source = rows[ancestor], ancestor
    return days, source


def expiry(received_at: datetime.datetime, days: int) -> datetime.datetime:
    return received_at + datetime.timedelta(days=days)
