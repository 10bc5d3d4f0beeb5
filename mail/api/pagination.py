"""Keyset pagination on a composite ordering such as ``(customer_path, email)``.

DRF's cursor pagination positions on the first ordering column only and falls back to an
OFFSET among equal values, which would scan a customer with 10,000 mailboxes. Here the
cursor carries every ordering column and the next page is the row comparison
``(a, b) > (x, y)``, written as ``a > x OR (a = x AND b > y)`` plus the redundant ``a >= x``
so PostgreSQL keeps it an index range. Forward-only: lists are walked with ``next``.
"""

from __future__ import annotations

from typing import Any

from django.db.models.query import ValuesIterable
from django.utils.translation import gettext as _
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from ums.api.compiled import values_rows

from .. import paging
from ..paging import encode_cursor, keyset_filter


def decode_cursor(token: str, mode: str, width: int) -> list[Any]:
    try:
        return paging.decode_cursor(token, mode, width)
    except ValueError as exc:
        raise ValidationError({"cursor": [_("Invalid cursor.")]}) from exc


class CompositeKeysetPagination(BasePagination):
    page_size = 50
    max_page_size = 500
    page_size_query_param = "page_size"
    cursor_query_param = "cursor"

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None or not raw.isdigit() or len(raw) > 9:
            return self.page_size
        return max(1, min(int(raw), self.max_page_size))

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any]:
        fields = tuple(view.get_keyset_ordering())
        mode = ",".join(fields)
        size = self.get_page_size(request)
        self.request = request
        token = request.query_params.get(self.cursor_query_param)
        if token:
            values = decode_cursor(token, mode, len(fields))
            queryset = queryset.filter(keyset_filter(fields, values))
        page = queryset.order_by(*fields)[: size + 1]
        # The values() lists (mailboxes) reuse their compiled SQL: see ums.api.compiled.
        rows = values_rows(page) if page._iterable_class is ValuesIterable else list(page)
        self.next_cursor = None
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1]
            self.next_cursor = encode_cursor(mode, [paging.value_of(last, f) for f in fields])
        return rows

    def get_next_link(self) -> str | None:
        if self.next_cursor is None:
            return None
        url = self.request.build_absolute_uri()
        return replace_query_param(url, self.cursor_query_param, self.next_cursor)

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"next": self.get_next_link(), "previous": None, "results": data})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["results"],
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {"name": "cursor", "required": False, "in": "query", "schema": {"type": "string"}},
            {"name": "pageSize", "required": False, "in": "query", "schema": {"type": "integer"}},
        ]

    def first_page_url(self) -> str:
        return remove_query_param(self.request.build_absolute_uri(), self.cursor_query_param)
