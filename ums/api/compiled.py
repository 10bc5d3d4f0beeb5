"""Compiled SQL kept per process for the simplest ``.values()`` pages.

Compiling a queryset to SQL costs about a quarter of the CPU of an API list page (the
first page of mailboxes: scoping filter, ordering, limit), more than PostgreSQL spends
running it. The same administrator asking for the same page sends the same query again
and again, so the compiled statement is kept, keyed by everything the SQL is made of.

Only queries whose whole state is understood are kept: one table (no join left), no
annotations, extra, distinct, grouping or combinators (every other attribute of the query
must equal a fresh query's), a ``WHERE`` of plain lookups on that table's columns with
plain values (strings, numbers, booleans, dates; the value's type is part of the key, so
``1`` and ``True`` never share an entry), and columns that need no conversion from the
database. Anything else runs through the ORM as before. The statement and its parameters
are exactly what the ORM produced for the same key, so the rows are the same; nothing of
the result is cached, only the SQL text: every request still reads the database.
"""

from __future__ import annotations

import datetime
import decimal
import threading
import uuid
from typing import Any

from django.db import connections
from django.db.models import Model
from django.db.models.expressions import Col
from django.db.models.lookups import Lookup
from django.db.models.query import QuerySet, ValuesIterable
from django.db.models.sql import Query
from django.db.models.sql.datastructures import BaseTable
from django.db.models.sql.where import WhereNode

MAX_ENTRIES = 2048
_PLAIN = (str, int, float, bool, decimal.Decimal, datetime.date, datetime.time, uuid.UUID)
# Query attributes that differ from a fresh query for a plain values() page: each is
# either in the key or checked to be harmless below. Every other attribute must equal
# the fresh query's, else the query is not kept.
_KNOWN = frozenset(
    {
        "where", "order_by", "values_select", "select", "selected", "default_cols",
        "low_mark", "high_mark", "alias_map", "alias_refcount", "table_map", "_lookup_joins",
        "_annotation_select_cache", "_extra_select_cache", "annotation_select_mask",
        "extra_select_mask", "filter_is_sticky", "used_aliases", "extra_order_by",
        "select_related", "deferred_loading",
    }
)  # fmt: skip
_UNKEPT = object()  # a key whose query turned out to need converters: never kept
_cache: dict[tuple, Any] = {}
_lock = threading.Lock()
_fresh: dict[type[Model], dict[str, Any]] = {}


def _where_key(node: Any, table: str) -> tuple | None:
    if isinstance(node, WhereNode):
        parts = []
        for child in node.children:
            part = _where_key(child, table)
            if part is None:
                return None
            parts.append(part)
        return ("node", node.connector, node.negated, tuple(parts))
    if not isinstance(node, Lookup) or node.bilateral_transforms:
        return None
    lhs, rhs = node.lhs, node.rhs
    if type(lhs) is not Col or lhs.alias != table or not isinstance(rhs, _PLAIN):
        return None
    target = lhs.target
    return (type(node), target.model, target.attname, type(lhs.output_field), type(rhs), rhs)


def _fresh_state(model: type[Model]) -> dict[str, Any]:
    state = _fresh.get(model)
    if state is None:
        state = _fresh[model] = dict(Query(model).__dict__)
    return state


def _key(queryset: QuerySet) -> tuple | None:
    """Everything the SQL of ``queryset`` depends on, or None when it is not understood."""
    if queryset._iterable_class is not ValuesIterable or queryset._prefetch_related_lookups:
        return None
    query = queryset.query
    model = query.model
    table = model._meta.db_table
    fresh = _fresh_state(model)
    for name, value in query.__dict__.items():
        if name in _KNOWN:
            continue
        expected = fresh[name] if name in fresh else getattr(Query, name, _UNKEPT)
        if expected is _UNKEPT or value != expected:
            return None
    alias = query.alias_map.get(table)
    # Joins the query set up and then trimmed (``values("domain_id")`` makes one) have no
    # references left and are not written into the SQL; a referenced one is a real join.
    joined = [a for a in query.alias_map if a != table and query.alias_refcount.get(a, 0)]
    if (
        joined
        or type(alias) is not BaseTable
        or alias.table_alias != table
        or query.annotation_select_mask
        or query.extra_select_mask
        or query.extra_order_by
        or query.select_related
        or query.deferred_loading != (frozenset(), True)
        or not all(isinstance(o, str) for o in query.order_by)
    ):
        return None
    selected = tuple((query.selected or {}).items())
    if not all(type(index) is int for _name, index in selected):
        return None  # an expression among the columns
    where = _where_key(query.where, table)
    if where is None:
        return None
    return (
        queryset.db, model, query.values_select, selected, query.default_cols,
        tuple(sorted(query.alias_refcount.items())),
        query.order_by, query.low_mark, query.high_mark, where,
    )  # fmt: skip


def _compile(queryset: QuerySet) -> Any:
    compiler = queryset.query.get_compiler(queryset.db)
    sql, params = compiler.as_sql()
    fields = [s[0] for s in compiler.select[: compiler.col_count]]
    if compiler.get_converters(fields) or compiler.has_extra_select:
        return _UNKEPT
    return sql, tuple(params)


def values_rows(queryset: QuerySet) -> list[dict[str, Any]]:
    """``list(queryset)`` of a ``.values()`` queryset, with its SQL compiled once per key."""
    key = _key(queryset)
    entry = _cache.get(key) if key is not None else _UNKEPT
    if entry is None:
        try:
            entry = _compile(queryset)
        except Exception:  # an empty IN, a full result set...: the ORM decides
            entry = _UNKEPT
        with _lock:
            if len(_cache) >= MAX_ENTRIES:
                _cache.clear()  # rare (distinct pages): start over rather than track age
            _cache[key] = entry
    if entry is _UNKEPT:
        return list(queryset)
    sql, params = entry
    # The row's names as ValuesIterable gives them (no extra or annotations here).
    names = list(queryset.query.selected or queryset.query.values_select)
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(sql, params)
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
