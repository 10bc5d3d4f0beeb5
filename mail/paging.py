"""Keyset cursors over composite orderings, shared by the API pagination and portal lists.

A cursor carries every ordering column of the last row shown; the next page is the rows
after it (``a > x OR (a = x AND b > y)`` plus the redundant ``a >= x``, which keeps it an
index range on PostgreSQL). Pages cost the same whatever their position in the list.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from django.db import models

MAX_VALUE = 1100


def keyset_filter(fields: tuple[str, ...], values: list[Any]) -> models.Q:
    """Rows strictly after ``values`` in ascending ``fields`` order."""
    condition = models.Q(**{f"{fields[-1]}__gt": values[-1]})
    for i in range(len(fields) - 2, -1, -1):
        condition = models.Q(**{f"{fields[i]}__gt": values[i]}) | (
            models.Q(**{fields[i]: values[i]}) & condition
        )
    return condition & models.Q(**{f"{fields[0]}__gte": values[0]})


def encode_cursor(mode: str, values: list[Any]) -> str:
    raw = json.dumps([mode, values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, mode: str, width: int) -> list[Any]:
    """The values of a cursor made for ``mode``; ValueError for anything else."""
    try:
        padded = token + "=" * (-len(token) % 4)
        got_mode, values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc
    if (
        got_mode != mode
        or not isinstance(values, list)
        or len(values) != width
        or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values)
        or any(isinstance(v, str) and ("\x00" in v or len(v) > MAX_VALUE) for v in values)
        or any(isinstance(v, int) and not 0 <= v < 2**63 for v in values)
    ):
        raise ValueError("invalid cursor")
    return values


def value_of(obj: Any, field: str) -> Any:
    value = obj[field] if isinstance(obj, dict) else getattr(obj, field)
    return value.pk if isinstance(value, models.Model) else value


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None
    is_first: bool


def page(
    queryset: models.QuerySet, fields: tuple[str, ...], cursor: str | None, size: int = 50
) -> Page:
    """One page after ``cursor``; an invalid cursor shows the first page."""
    mode = ",".join(fields)
    values = None
    if cursor:
        try:
            values = decode_cursor(cursor, mode, len(fields))
        except ValueError:
            values = None
    if values is not None:
        queryset = queryset.filter(keyset_filter(fields, values))
    rows = list(queryset.order_by(*fields)[: size + 1])
    next_cursor = None
    if len(rows) > size:
        rows = rows[:size]
        next_cursor = encode_cursor(mode, [value_of(rows[-1], f) for f in fields])
    return Page(rows, next_cursor, values is None)
