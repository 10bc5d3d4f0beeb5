"""Scope evidence: hash version 2 covers the path a record was written with, and the
append-only trigger lets ``customer_path`` change only as part of a customer move.

* ``hash_version``: existing rows are 1 (their hash keeps the old formula, so they stay
  verifiable); the application writes 2. ``recorded_path``: the customer path when written,
  covered by the v2 hash.
* The trigger refuses DELETE and any UPDATE of any column except ``customer_path``; that
  one only when the transaction-local setting ``ums.audit_scope_move`` holds
  "<old prefix> <new prefix>" and the new value is exactly the old one with that prefix
  replaced (``AuditRecord.objects.move_scope``). A plain UPDATE of the scope is refused. A
  database superuser can still set the setting or disable the trigger; ``audit_verify``
  then finds a v2 record whose path no ``customer.move`` in the chain explains.
"""

from django.db import migrations, models

from ums.migration_ops import postgres_only

FORWARD = [
    """
    CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
    DECLARE
        move text;
        old_prefix text;
        new_prefix text;
    BEGIN
        IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION 'audit records are append-only';
        END IF;
        IF (to_jsonb(NEW) - 'customer_path' - 'search_vector')
           IS DISTINCT FROM (to_jsonb(OLD) - 'customer_path' - 'search_vector') THEN
            RAISE EXCEPTION 'audit records are append-only';
        END IF;
        IF NEW.customer_path IS DISTINCT FROM OLD.customer_path THEN
            move := coalesce(current_setting('ums.audit_scope_move', true), '');
            old_prefix := split_part(move, ' ', 1);
            new_prefix := split_part(move, ' ', 2);
            IF old_prefix = '' OR new_prefix = ''
               OR left(OLD.customer_path, length(old_prefix)) <> old_prefix
               OR NEW.customer_path
                  <> new_prefix || substr(OLD.customer_path, length(old_prefix) + 1)
            THEN
                RAISE EXCEPTION USING MESSAGE = 'audit records are append-only: '
                    || 'customer_path changes only with a customer move';
            END IF;
        END IF;
        RETURN NEW;
    END;
    $$ LANGUAGE plpgsql
    """,
]

# The function of 0002: customer_path freely updatable.
REVERSE = [
    """
    CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION 'audit records are append-only';
        END IF;
        IF (to_jsonb(NEW) - 'customer_path' - 'search_vector')
           IS DISTINCT FROM (to_jsonb(OLD) - 'customer_path' - 'search_vector') THEN
            RAISE EXCEPTION 'audit records are append-only';
        END IF;
        RETURN NEW;
    END;
    $$ LANGUAGE plpgsql
    """,
]


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_c_collation_for_paths")]

    operations = [
        migrations.AddField(
            model_name="auditrecord",
            name="hash_version",
            field=models.PositiveSmallIntegerField(db_default=1, default=1),
        ),
        migrations.AddField(
            model_name="auditrecord",
            name="recorded_path",
            field=models.CharField(blank=True, db_default="", default="", max_length=1000),
        ),
        postgres_only(FORWARD, REVERSE),
    ]
