"""Keyset paging for portal lists: constant cost whatever page the user is on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import models
from django.http import QueryDict

MAX_ID = 2**63 - 1


@dataclass
class KeysetPage:
    items: list[Any]
    next_after: int | None
    prev_before: int | None
    is_first: bool


def _bounded_id(value: str | None) -> int | None:
    if value and value.isdigit() and 0 < int(value) <= MAX_ID:
        return int(value)
    return None


def keyset_page(
    queryset: models.QuerySet, params: QueryDict, ordering: str = "-id", size: int = 50
) -> KeysetPage:
    """One page ordered by a unique integer column (``id`` or ``-id``, ``seq`` or ``-seq``)."""
    descending = ordering.startswith("-")
    column = ordering.lstrip("-")
    after = _bounded_id(params.get("after"))
    before = _bounded_id(params.get("before"))
    forward_lookup = f"{column}__lt" if descending else f"{column}__gt"
    backward_lookup = f"{column}__gt" if descending else f"{column}__lt"
    if before is not None:
        reverse = column if descending else f"-{column}"
        rows = list(queryset.filter(**{backward_lookup: before}).order_by(reverse)[: size + 1])
        has_more_back = len(rows) > size
        items = list(reversed(rows[:size]))
        next_after = getattr(items[-1], column) if items else None
        prev_before = getattr(items[0], column) if items and has_more_back else None
        return KeysetPage(items, next_after, prev_before, not has_more_back)
    if after is not None:
        queryset = queryset.filter(**{forward_lookup: after})
    rows = list(queryset.order_by(ordering)[: size + 1])
    items = rows[:size]
    next_after = getattr(items[-1], column) if len(rows) > size else None
    prev_before = getattr(items[0], column) if after is not None and items else None
    return KeysetPage(items, next_after, prev_before, after is None)
