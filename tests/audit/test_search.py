"""Audit search by actor: a numeric value is an actor id, anything else a case-insensitive
substring of the actor's name, resolved among the distinct names and answered by the
``(actor_name, seq)`` index; pages read key first are the same pages."""

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


def test_actor_substring_search_walks_the_name_index_alone(
    history: dict[str, set[int]],
) -> None:
    """The needle is matched against the distinct names; the page's keys then come from
    the ``(actor_name, seq)`` index (which carries the scope path) without the table."""
    queryset = search.apply_filters(
        AuditRecord.objects.filter(customer_path__startswith="/"), actor="sub adm"
    ).order_by("-seq")
    keys = queryset.values("seq")[:51]
    assert "audit_actorname_seq" in plan(keys)
    assert not search.apply_filters(AuditRecord.objects.all(), actor="nobody").exists()


def test_every_actor_name_is_in_the_names_table(cast: Cast, history: dict[str, set[int]]) -> None:
    """Appends and bulk loads (the trigger fires per statement, COPY included)."""
    from audit.models import AuditActorName

    names = set(AuditActorName.objects.values_list("name", flat=True))
    assert set(AuditRecord.objects.values_list("actor_name", flat=True)) <= names
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditrecord (seq, timestamp, actor_id, actor_name, channel, "
            "request_id, action, object_type, object_id, object_repr, customer_path, "
            "recorded_path, hash_version, changes, search_text, prev_hash, hash) "
            "SELECT 900000 + g, now(), NULL, 'Loaded ' || g, 'cli', '', 'x.y', '', '', '', "
            "'/', '/', 1, '{}', '', '', '' FROM generate_series(1, 3) AS g"
        )
    assert {"Loaded 1", "Loaded 2", "Loaded 3"} <= set(
        AuditActorName.objects.values_list("name", flat=True)
    )


@pytest.mark.parametrize(
    "needle", ["admin", "ADMIN", "sub", "root.admin", "<", ">", "Admin <", "zz", "s", "%", "_"]
)
def test_actor_search_finds_what_a_substring_match_on_the_records_finds(
    history: dict[str, set[int]], needle: str
) -> None:
    expected = set(
        AuditRecord.objects.filter(actor_name__icontains=needle).values_list("seq", flat=True)
    )
    got = set(
        search.apply_filters(AuditRecord.objects.all(), actor=needle).values_list("seq", flat=True)
    )
    assert got == expected


def test_pages_read_key_first_are_the_same_pages(cast: Cast, history: dict[str, set[int]]) -> None:
    """Page by page through the API (cursor) equals one unpaged, unfenced query."""
    for i in range(7):
        actions.update_customer(actor=cast.sub_admin, customer=cast.ministry, notes=f"more {i}")
    client = token_client(cast.sub_admin)
    for params in ({}, {"actor": "sub"}, {"actor": str(cast.sub_admin.pk)},
                   {"action": "customer.update"}, {"customer": cast.ministry.pk},
                   {"q": "more"}, {"q": "more", "actor": "sub"}):  # fmt: skip
        # Requests may append records (token use): compare what existed before paging.
        top = AuditRecord.objects.order_by("-seq").values_list("seq", flat=True)[0]
        seen: list[int] = []
        url, query = AUDIT, {**params, "pageSize": 3}
        while url:
            response = client.get(url, query)
            assert response.status_code == 200, response.content
            seen += [row["seq"] for row in response.json()["results"]]
            url, query = response.json()["next"], None
        seen = [seq for seq in seen if seq <= top]
        scope = AuditRecord.objects.filter(
            customer_path__startswith=cast.government.path, seq__lte=top
        )
        expected = search.apply_filters(
            scope,
            actor=params.get("actor"),
            action=params.get("action"),
            customer_path=cast.ministry.path if "customer" in params else None,
            text=params.get("q"),
        ).order_by("-seq")
        assert seen == list(expected.values_list("seq", flat=True)), params


def test_full_text_inside_the_key_sub_select_names_the_inner_table(
    history: dict[str, set[int]],
) -> None:
    """The text condition must refer to the sub-select's own table, not the outer one."""
    from django.test.utils import CaptureQueriesContext

    queryset = search.apply_filters(AuditRecord.objects.all(), text="admin").order_by("-seq")
    with CaptureQueriesContext(connection) as captured:
        rows = list(queryset[:2])
    sql = captured.captured_queries[-1]["sql"]
    assert "U0.search_vector @@" in sql and "audit_auditrecord.search_vector" not in sql, sql
    assert [r.seq for r in rows] == list(queryset.values_list("seq", flat=True)[:2])
