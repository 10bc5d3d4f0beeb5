"""The audit log is append-only and its hash chain exposes tampering."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from audit.models import AuditRecord
from tenants import actions
from tests.fixtures import Cast

pytestmark = pytest.mark.django_db


def tamper(sql: str, params: list) -> None:
    """Change the table behind the application's back, as a database superuser could."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditrecord DISABLE TRIGGER audit_append_only")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE audit_auditrecord ENABLE TRIGGER audit_append_only")


def some_history(cast: Cast) -> list[AuditRecord]:
    for i in range(3):
        actions.update_customer(actor=cast.sub_admin, customer=cast.ministry, notes=f"note {i}")
    return list(AuditRecord.objects.order_by("seq"))


def test_intact_chain_verifies(cast: Cast, capsys) -> None:
    some_history(cast)
    call_command("audit_verify")
    assert "intact" in capsys.readouterr().out


def test_edited_record_is_reported(cast: Cast) -> None:
    records = some_history(cast)
    victim = records[len(records) // 2]
    tamper("UPDATE audit_auditrecord SET actor_name = %s WHERE id = %s", ["Nobody", victim.pk])
    with pytest.raises(CommandError, match=f"record {victim.seq}: its content was altered"):
        call_command("audit_verify")


def test_deleted_record_is_reported(cast: Cast) -> None:
    records = some_history(cast)
    victim = records[len(records) // 2]
    tamper("DELETE FROM audit_auditrecord WHERE id = %s", [victim.pk])
    with pytest.raises(CommandError, match=f"record {victim.seq} is missing"):
        call_command("audit_verify")


def test_deleted_last_record_is_reported(cast: Cast) -> None:
    records = some_history(cast)
    tamper("DELETE FROM audit_auditrecord WHERE id = %s", [records[-1].pk])
    with pytest.raises(CommandError, match="missing"):
        call_command("audit_verify")


def test_database_refuses_updates_and_deletes(cast: Cast) -> None:
    record = some_history(cast)[0]
    for statement in (
        "UPDATE audit_auditrecord SET action = 'x' WHERE id = %s",
        "DELETE FROM audit_auditrecord WHERE id = %s",
    ):
        with (
            pytest.raises(Exception, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [record.pk])
    with pytest.raises(RuntimeError):
        record.delete()


def test_record_holds_who_what_where(cast: Cast) -> None:
    actions.update_customer(actor=cast.sub_admin, customer=cast.ministry, name="Ministry of Works")
    record = AuditRecord.objects.latest("seq")
    assert record.action == "customer.update"
    assert record.actor_id == cast.sub_admin.pk
    assert record.actor_name == "Sub Admin <sub.admin>"
    assert record.object_type == "tenants.customer"
    assert record.object_id == str(cast.ministry.pk)
    assert record.customer_id == cast.ministry.pk
    assert record.changes == {
        "before": {"name": "Ministry"},
        "after": {"name": "Ministry of Works"},
    }
    assert record.request_id


def test_move_keeps_chain_valid(cast: Cast) -> None:
    some_history(cast)
    actions.move_customer(actor=cast.root_admin, customer=cast.ministry, new_parent=cast.isp)
    call_command("audit_verify")
    moved = AuditRecord.objects.filter(customer_id=cast.ministry.pk).first()
    assert moved.customer_path.startswith(cast.isp.path)
