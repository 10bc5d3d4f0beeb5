"""Searching held mail: the filters, the newest-first keyset page and capped counts.

One set of filters serves the sheet's JSON query, the API lists, the portal queue and the
bulk jobs (``spamhold.actions.start_bulk`` stores the filters in the job's params and its
handler calls :func:`apply_filters`). Filters travel as a plain JSON-safe dict with
snake_case keys (see :data:`FILTER_KEYS`), so what the caller asked for is exactly what the
job acts on, even if it runs minutes later.

Pages are ordered newest first on ``(received_at, id)``; with a sender or recipient domain
and a status that is the range of the composite index ``(sender_domain, status,
-received_at, -id)`` (or the recipient one), so a page costs the same on a queue of ten
messages or a million. Counts per reason read at most :data:`COUNT_CAP` rows: exact for a
narrow filter, "at least" figures and "cap+" in all for a broad one (an exact count of
700,000 rows takes ~90 ms to seconds; see :func:`counts_by_reason`).
"""

from __future__ import annotations

import contextlib
import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections, models, transaction

from mail.paging import decode_cursor, encode_cursor
from tenants.models import Customer

from .models import Reason, Status

# The sheet's "end of time" is 2147483647; later times are accepted up to the last second
# Python's datetime can hold, anything else (negative, NaN, 1e300) is a field error.
MAX_EPOCH = 253402300799
MAX_ID = 2**63 - 1
# Counts read at most this many rows (see counts_by_reason): ~1-5 ms at 1M held.
COUNT_CAP = 2_000
CURSOR_MODE = "spamhold:received,id"

FILTER_KEYS: tuple[str, ...] = (
    "start_time",
    "end_time",
    "status",
    "reason",
    "from_domain",
    "from_email",
    "to_domain",
    "to_email",
    "subject",
    "node",
    "customer",
)

# The columns a list row needs (``.values()`` rows: no model instances on hot paths).
SHEET_COLUMNS = (
    "id",
    "received_at",
    "status",
    "expires_at",
    "sender_domain",
    "sender",
    "recipient",
    "subject",
    "outcome",
)
LIST_COLUMNS = (
    *SHEET_COLUMNS,
    "recipient_domain",
    "reason",
    "size",
    "node_id",
    "node_name",
    "customer_id",
    "handled_at",
    "handled_by_name",
    "node_error",
)


class FilterError(ValueError):
    """Filters that cannot be applied (only from callers that skipped validation)."""


def epoch(value: datetime.datetime | None, *, millis: bool = False) -> float | int | None:
    """Epoch seconds as the sheet shows them: with milliseconds (float) or whole (int)."""
    if value is None:
        return None
    stamp = value.timestamp()
    return round(stamp, 3) if millis else int(stamp)


def from_epoch(value: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(value, tz=datetime.UTC)


def valid_epoch(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_EPOCH
    )


def normalise_domain(value: str) -> str:
    """Domains compare lower-case, without the root dot; IDNs as their A-label."""
    value = value.strip().lower().rstrip(".")
    if value and not value.isascii():
        with contextlib.suppress(UnicodeError):
            value = value.encode("idna").decode("ascii")
    return value


def _text(filters: Mapping[str, Any], key: str, limit: int) -> str:
    value = filters[key]
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise FilterError(key)
    return value


def apply_filters(
    queryset: models.QuerySet,
    filters: Mapping[str, Any],
    *,
    customer_path: str | None = None,
) -> models.QuerySet:
    """``queryset`` narrowed by ``filters`` (the plain dict described in the module doc).

    Scoping is not done here: callers pass an already scoped queryset. A ``customer`` id is
    resolved to its path with one query unless ``customer_path`` is given (the API has the
    customer already). Malformed values raise :class:`FilterError`; the API and the portal
    validate first, so only a caller that skipped validation can hit it.
    """
    unknown = set(filters) - set(FILTER_KEYS)
    if unknown:
        raise FilterError(", ".join(sorted(unknown)))
    query = models.Q()
    if filters.get("start_time") is not None:
        if not valid_epoch(filters["start_time"]):
            raise FilterError("start_time")
        query &= models.Q(received_at__gte=from_epoch(filters["start_time"]))
    if filters.get("end_time") is not None:
        if not valid_epoch(filters["end_time"]):
            raise FilterError("end_time")
        query &= models.Q(received_at__lte=from_epoch(filters["end_time"]))
    if filters.get("status"):
        if filters["status"] not in Status.values:
            raise FilterError("status")
        query &= models.Q(status=filters["status"])
    if filters.get("reason"):
        if filters["reason"] not in Reason.values:
            raise FilterError("reason")
        query &= models.Q(reason=filters["reason"])
    if filters.get("from_domain"):
        query &= models.Q(sender_domain=normalise_domain(_text(filters, "from_domain", 255)))
    if filters.get("to_domain"):
        query &= models.Q(recipient_domain=normalise_domain(_text(filters, "to_domain", 255)))
    if filters.get("from_email"):
        query &= models.Q(sender__iexact=_text(filters, "from_email", 320).strip())
    if filters.get("to_email"):
        address = _text(filters, "to_email", 320).strip()
        # Later recipients of a multi-recipient message, as stored (lower-case).
        query &= models.Q(recipient__iexact=address) | models.Q(
            recipients__contains=[address.lower()]
        )
    if filters.get("subject"):
        query &= models.Q(subject__icontains=_text(filters, "subject", 998))
    if filters.get("node") is not None:
        node = filters["node"]
        if isinstance(node, bool) or not isinstance(node, int) or not 0 < node <= MAX_ID:
            raise FilterError("node")
        query &= models.Q(node_id=node)
    queryset = queryset.filter(query)
    if filters.get("customer") is not None:
        customer = filters["customer"]
        if (
            isinstance(customer, bool)
            or not isinstance(customer, int)
            or not 0 < customer <= MAX_ID
        ):
            raise FilterError("customer")
        if customer_path is None:
            customer_path = (
                Customer.objects.filter(pk=customer).values_list("path", flat=True).first()
            )
        if customer_path is None:
            return queryset.none()
        queryset = queryset.filter(customer_path__startswith=customer_path)
    return queryset


# ---------------------------------------------------------------------------- paging


@dataclass
class Page:
    rows: list[Any]
    next_cursor: str | None
    is_first: bool


def _micros(value: datetime.datetime) -> int:
    delta = value - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds


def decode(cursor: str) -> tuple[datetime.datetime, int]:
    """The position a cursor stands for; ValueError for anything a client made up."""
    micros, pk = decode_cursor(cursor, CURSOR_MODE, 2)
    if not isinstance(micros, int) or not isinstance(pk, int) or micros > MAX_EPOCH * 10**6:
        raise ValueError("invalid cursor")
    start = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return start + datetime.timedelta(microseconds=micros), pk


def page(
    queryset: models.QuerySet,
    *,
    cursor: str | None,
    size: int,
    columns: tuple[str, ...] | None = None,
) -> Page:
    """One page, newest first, after ``cursor`` (ValueError if the cursor is not ours).

    The condition ``received < t OR (received = t AND id < pk)`` comes with the redundant
    ``received <= t`` so PostgreSQL keeps it a range of the composite index.
    """
    if cursor:
        at, pk = decode(cursor)
        queryset = queryset.filter(
            models.Q(received_at__lt=at) | models.Q(received_at=at, id__lt=pk),
            received_at__lte=at,
        )
    ordered = queryset.order_by("-received_at", "-id")
    if columns is not None:
        ordered = ordered.values(*columns)
    rows = list(ordered[: size + 1])
    next_cursor = None
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]
        if isinstance(last, dict):
            stamp, pk = last["received_at"], last["id"]
        else:
            stamp, pk = last.received_at, last.pk
        next_cursor = encode_cursor(CURSOR_MODE, [_micros(stamp), pk])
    return Page(rows, next_cursor, not cursor)


# ---------------------------------------------------------------------------- counts


@dataclass
class ReasonCount:
    reason: str
    label: str
    count: int
    exact: bool


def counts_by_reason(
    queryset: models.QuerySet, cap: int = COUNT_CAP, *, time_range: bool = False
) -> list[ReasonCount]:
    """How many messages per reason: exact when at most ``cap`` messages match in all,
    otherwise lower bounds.

    One statement reads at most ``cap + 1`` matching rows (any of them: no order, so the
    planner takes the cheapest path) and groups them by reason. The work is bounded by the
    cap whatever the filter: counting each reason on its own to the cap (the earlier
    design) walks every matching row when a reason is rare under a broad filter (0.3-2.4 s
    at 1M held for ``status``, a common subject word, a 3-day window). When more than
    ``cap`` match, every count is ``exact`` False and means "at least this many" (what the
    rows read hold), and :func:`total` is the cap, shown as "cap+": never a wrong exact
    number. ``queryset`` should not already be filtered by reason.

    ``time_range``: the filters include ``start_time``/``end_time``. The heap is in
    arrival order, so a sequential scan reaches a window of last week only after every
    older row, while the planner (assuming matches spread evenly) expects to stop after a
    few pages: 0.5-0.9 s at 1M held. Such a count is planned without sequential scans (the
    received-time indexes answer the window). Without a time range the sequential scan is
    the cheapest way to read any ``cap`` rows of a broad filter (a common subject word:
    its trigram bitmap alone reads 200,000 entries) and stays allowed.
    """
    found: dict[str, int] = {}
    sample = queryset.order_by().values("reason")[: cap + 1]
    try:
        sql, params = sample.query.sql_with_params()
    except EmptyResultSet:  # a filter that can match nothing (``.none()``)
        sql = None
    if sql is not None:
        # Django's own compiled SQL; the values stay parameters.
        grouped = f"SELECT s.reason, count(*) FROM ({sql}) AS s GROUP BY s.reason"  # noqa: S608
        with (
            transaction.atomic(using=queryset.db) if time_range else contextlib.nullcontext(),
            connections[queryset.db].cursor() as cursor,
        ):
            if time_range:
                cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(grouped, params)
            found = dict(cursor.fetchall())
    exact = sum(found.values()) <= cap
    return [
        ReasonCount(value, str(label), min(found.get(value, 0), cap), exact)
        for value, label in Reason.choices
    ]


def has_time_range(filters: Mapping[str, Any]) -> bool:
    return filters.get("start_time") is not None or filters.get("end_time") is not None


def total(rows: list[ReasonCount], cap: int = COUNT_CAP) -> int:
    """All reasons together: exact if every row is, else the cap (shown as "cap+")."""
    return min(sum(r.count for r in rows), cap)


def pending_outcome(row: Mapping[str, Any]) -> str | None:
    """The outcome requested for a message and not yet confirmed by its node, or None.

    A pending message keeps ``status`` ``ONHOLD`` (it *is* still in the hold queue), so
    the sheet's ``"status": "ONHOLD"`` query still finds it; ``pending`` tells it apart.
    """
    return (row["outcome"] or None) if row["status"] == Status.ONHOLD else None


def sheet_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``.values()`` row in the sheet's shape, plus the ``id`` to act on it and
    ``pending`` (see :func:`pending_outcome`)."""
    return {
        "id": row["id"],
        "timestamp": epoch(row["received_at"], millis=True),
        "status": row["status"],
        "expiry": epoch(row["expires_at"]),
        "fromDomain": row["sender_domain"],
        "fromEmail": row["sender"],
        "toEmail": row["recipient"],
        "subject": row["subject"],
        "pending": pending_outcome(row),
    }


def list_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The sheet's fields plus what a queue table shows (reason, node, outcome)."""
    return {
        **sheet_row(row),
        "toDomain": row["recipient_domain"],
        "reason": row["reason"],
        "size": row["size"],
        "node": row["node_id"],
        "nodeName": row["node_name"],
        "customer": row["customer_id"],
        "outcome": row["outcome"],
        "handledAt": epoch(row["handled_at"], millis=True),
        "handledBy": row["handled_by_name"],
        "nodeError": row["node_error"],
    }


STATUS_LABELS = dict(Status.choices)
REASON_LABELS = dict(Reason.choices)
