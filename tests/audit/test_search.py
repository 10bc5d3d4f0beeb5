"""Audit search by actor: a numeric value is an actor id, anything else a case-insensitive
substring of the actor's name, and that substring search is answered by its index."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from audit import search
from audit.models import AuditRecord
from tenants import actions
from tests.fixtures import Cast, token_client

pytestmark = pytest.mark.django_db

AUDIT = "/api/v1/audit/"


@pytest.fixture
def history(cast: Cast) -> dict[str, set[int]]:
    """Two records by each of two administrators (names "Root Admin <root.admin>" and
    "Sub Admin <sub.admin>"), by their seq."""
    before = set(AuditRecord.objects.values_list("seq", flat=True))
    by: dict[str, set[int]] = {}
    for admin in (cast.root_admin, cast.sub_admin):
        for i in range(2):
            actions.update_customer(actor=admin, customer=cast.ministry, notes=f"{admin} {i}")
        seqs = set(AuditRecord.objects.values_list("seq", flat=True)) - before
        by[admin.username] = seqs - set().union(*by.values()) if by else seqs
        before |= seqs
    return by


def found(cast: Cast, actor: str) -> set[int]:
    response = token_client(cast.root_admin).get(AUDIT, {"actor": actor, "pageSize": 200})
    assert response.status_code == 200, response.content
    return {row["seq"] for row in response.json()["results"]}


def test_actor_name_is_a_case_insensitive_substring(
    cast: Cast, history: dict[str, set[int]]
) -> None:
    root, sub = history["root.admin"], history["sub.admin"]
    assert len(root) >= 2 and len(sub) >= 2
    assert found(cast, "root.admin") >= root and not found(cast, "root.admin") & sub
    assert found(cast, "SUB ADMIN") == sub
    assert found(cast, "ub adm") == sub
    assert found(cast, "admin>") >= root | sub
    assert found(cast, "nobody at all") == set()


def test_wildcards_in_the_actor_are_literal(cast: Cast, history: dict[str, set[int]]) -> None:
    assert found(cast, "%") == set()
    assert found(cast, "Sub_Admin") == set()
    assert found(cast, "_") == set()


def test_numeric_actor_is_an_actor_id(cast: Cast, history: dict[str, set[int]]) -> None:
    assert found(cast, str(cast.sub_admin.pk)) == history["sub.admin"]


def plan(queryset: Any) -> str:
    """EXPLAIN of a query with sequential scans priced out: whatever index can answer it
    shows up, and a filter no index matches still shows a Seq Scan."""
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        text = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
    return text


def test_actor_substring_search_uses_the_trigram_index(history: dict[str, set[int]]) -> None:
    queryset = search.apply_filters(AuditRecord.objects.all(), actor="sub adm").order_by("-seq")
    assert "audit_actor_name_trgm" in plan(queryset)
