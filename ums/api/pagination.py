"""Keyset (cursor) pagination: a page costs the same on page 1 and page 10,000."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import CursorPagination
from rest_framework.request import Request


class KeysetPagination(CursorPagination):
    page_size = 50
    # Sent as ?pageSize=; the camelCase middleware hands it over as page_size.
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = "-id"
    cursor_query_param = "cursor"

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> tuple[str, ...]:
        # Each viewset names its own unique, indexed ordering column.
        ordering = getattr(view, "ordering", None) or self.ordering
        return (ordering,) if isinstance(ordering, str) else tuple(ordering)
