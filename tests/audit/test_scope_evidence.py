"""Scope is evidence: a record cannot be moved out of a tenant's sight undetected.

The database refuses an UPDATE of ``customer_path`` (and of every other column) outside a
customer move; a record moved behind the trigger's back (as a database superuser could) is
reported by ``audit_verify``; a real subtree move keeps the chain intact.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.urls import reverse

from audit import chain
from audit.models import AuditChainHead, AuditRecord
from audit.verify import verify
from tenants import actions
from tests.audit.test_chain import tamper
from tests.fixtures import PASSWORD, Cast

pytestmark = pytest.mark.django_db


def ministry_record(cast: Cast) -> AuditRecord:
    actions.update_customer(actor=cast.sub_admin, customer=cast.ministry, notes="evidence")
    return AuditRecord.objects.filter(action="customer.update").latest("seq")


def test_new_records_carry_their_scope_in_the_hash(cast: Cast) -> None:
    record = ministry_record(cast)
    assert record.hash_version == chain.CURRENT_VERSION == 3  # v3: chained after commit
    assert record.recorded_path == record.customer_path == cast.ministry.path


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("customer_path", "/elsewhere/"),
        ("recorded_path", "/elsewhere/"),
        ("customer_id", 0),
        ("hash_version", 1),
        ("object_id", "0"),
    ],
)
def test_database_refuses_update_of_scope_columns(cast: Cast, column: str, value) -> None:
    record = ministry_record(cast)
    with (
        pytest.raises(Exception, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            f"UPDATE audit_auditrecord SET {column} = %s WHERE id = %s",  # noqa: S608
            [value, record.pk],
        )
    assert AuditRecord.objects.get(pk=record.pk).customer_path == cast.ministry.path


def test_the_move_setting_allows_only_its_own_prefix(cast: Cast) -> None:
    record = ministry_record(cast)
    with (
        pytest.raises(Exception, match="customer move"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "SELECT set_config('ums.audit_scope_move', %s, true)",
            [f"{cast.ministry.path} {cast.isp.path}"],
        )
        cursor.execute(
            "UPDATE audit_auditrecord SET customer_path = %s WHERE id = %s",
            [cast.shop.path, record.pk],
        )


def test_record_moved_behind_the_trigger_is_reported(cast: Cast) -> None:
    record = ministry_record(cast)
    call_command("audit_verify")
    tamper(
        "UPDATE audit_auditrecord SET customer_path = %s WHERE id = %s",
        [cast.shop.path, record.pk],
    )
    with pytest.raises(CommandError, match=f"record {record.seq}: its scope was changed"):
        call_command("audit_verify")


def test_record_moved_through_a_forged_move_setting_is_reported(cast: Cast) -> None:
    """The setting is not a secret: anyone with SQL can set it; the chain still tells."""
    record = ministry_record(cast)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('ums.audit_scope_move', %s, true)",
            [f"{cast.ministry.path} {cast.isp.path}"],
        )
        cursor.execute(
            "UPDATE audit_auditrecord SET customer_path = %s WHERE id = %s",
            [cast.isp.path + record.customer_path[len(cast.ministry.path) :], record.pk],
        )
        cursor.execute("SELECT set_config('ums.audit_scope_move', '', true)")
    assert verify().finding is not None
    assert "scope was changed" in verify().finding.problem


def test_version_downgrade_is_reported(cast: Cast) -> None:
    record = ministry_record(cast)
    tamper("UPDATE audit_auditrecord SET hash_version = 1 WHERE id = %s", [record.pk])
    with pytest.raises(CommandError, match=f"record {record.seq}: its content was altered"):
        call_command("audit_verify")


def test_a_real_move_keeps_the_chain_intact_and_records_follow(cast: Cast, capsys) -> None:
    record = ministry_record(cast)
    old_path = cast.ministry.path
    actions.move_customer(actor=cast.root_admin, customer=cast.ministry, new_parent=cast.isp)
    cast.ministry.refresh_from_db()
    moved = AuditRecord.objects.get(pk=record.pk)
    assert moved.customer_path == cast.ministry.path != old_path
    assert moved.recorded_path == old_path
    # Back again: two moves replayed in order.
    actions.move_customer(actor=cast.root_admin, customer=cast.ministry, new_parent=cast.government)
    call_command("audit_verify")
    assert "intact" in capsys.readouterr().out
    assert AuditRecord.objects.get(pk=record.pk).customer_path == old_path


def test_version_1_records_stay_verifiable_and_are_counted(cast: Cast, capsys) -> None:
    """Records written before scope evidence keep the old formula; their scope is not
    covered, and the command says so."""
    record = ministry_record(cast)
    # Rewrite the record as the old code wrote it: v1, no recorded path, v1 hash; then
    # relink the rest of the chain (a v1 history is what a deployment has today).
    records = list(AuditRecord.objects.order_by("seq"))
    prev = chain.GENESIS
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditrecord DISABLE TRIGGER audit_append_only")
        for row in records:
            if row.seq <= record.seq:
                row.hash_version, row.recorded_path = 1, ""
            row.prev_hash = prev
            row.hash = chain.compute_hash(prev, row.hashed_values())
            cursor.execute(
                "UPDATE audit_auditrecord SET hash_version = %s, recorded_path = %s, "
                "prev_hash = %s, hash = %s WHERE id = %s",
                [row.hash_version, row.recorded_path, row.prev_hash, row.hash, row.pk],
            )
            prev = row.hash
        cursor.execute("ALTER TABLE audit_auditrecord ENABLE TRIGGER audit_append_only")
    AuditChainHead.objects.filter(pk=1).update(last_hash=prev)
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert "intact" in out
    v1 = sum(1 for row in records if row.seq <= record.seq)
    assert f"{v1} records predate scope evidence" in out
    # The documented limit: a v1 record's moved scope is not detected.
    tamper(
        "UPDATE audit_auditrecord SET customer_path = %s WHERE id = %s",
        [cast.shop.path, record.pk],
    )
    assert verify().finding is None


def test_portal_search_refuses_a_date_it_cannot_convert(cast: Cast, client, settings) -> None:
    settings.TIME_ZONE = "Asia/Ulaanbaatar"  # east of UTC: year 1 has no UTC equivalent
    assert client.login(username="sub.admin", password=PASSWORD)
    response = client.get(reverse("audit:record-list"), {"since": "0001-01-01T00:00"})
    assert response.status_code == 200
    assert "between the years 1 and 9999" in response.content.decode()
