"""Keyset (cursor) pagination: a page costs the same on page 1 and page 10,000."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request


def _on_base_url(link: str | None) -> str | None:
    """Links are built from the configured base URL, never from the Host header."""
    if not link:
        return link
    base = urlsplit(settings.BASE_URL)
    parts = urlsplit(link)
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))


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

    def get_next_link(self) -> str | None:
        return _on_base_url(super().get_next_link())

    def get_previous_link(self) -> str | None:
        return _on_base_url(super().get_previous_link())
