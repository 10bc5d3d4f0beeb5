"""Audit records are chained after their commit by one chainer (issue 19).

* New columns: ``content_hash`` (a v3 record's own hash, taken at insert), ``chain_pos``
  (gapless position in the chain, unique) and ``prev_seq`` (the record before it);
  ``prev_hash`` and ``hash`` may be NULL until the record is chained. Existing records were
  chained in ``seq`` order without gaps: ``chain_pos = seq``, ``prev_seq = seq - 1``.
* ``seq`` of new records comes from the sequence ``audit_record_seq`` (gaps on rollback).
* The append-only trigger now also lets the chain columns (``chain_pos``, ``prev_seq``,
  ``prev_hash``, ``hash``) be set exactly once, all together, from NULL; every other rule
  of 0004 (no DELETE, no UPDATE of any other column, ``customer_path`` only in a customer
  move) stays.
"""

import importlib

from django.db import migrations, models

from ums.migration_ops import postgres_only

TRIGGER = """
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
DECLARE
    move text;
    old_prefix text;
    new_prefix text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit records are append-only';
    END IF;
    IF (to_jsonb(NEW) - 'customer_path' - 'search_vector'
                      - 'chain_pos' - 'prev_seq' - 'prev_hash' - 'hash')
       IS DISTINCT FROM (to_jsonb(OLD) - 'customer_path' - 'search_vector'
                      - 'chain_pos' - 'prev_seq' - 'prev_hash' - 'hash') THEN
        RAISE EXCEPTION 'audit records are append-only';
    END IF;
    IF (NEW.chain_pos, NEW.prev_seq, NEW.prev_hash, NEW.hash)
       IS DISTINCT FROM (OLD.chain_pos, OLD.prev_seq, OLD.prev_hash, OLD.hash) THEN
        IF OLD.chain_pos IS NOT NULL OR OLD.prev_seq IS NOT NULL
           OR OLD.prev_hash IS NOT NULL OR OLD.hash IS NOT NULL
           OR NEW.chain_pos IS NULL OR NEW.prev_seq IS NULL
           OR NEW.prev_hash IS NULL OR NEW.hash IS NULL THEN
            RAISE EXCEPTION USING MESSAGE = 'audit records are append-only: '
                || 'the chain columns are set once, together, from NULL';
        END IF;
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
"""

FORWARD = [
    "ALTER TABLE audit_auditrecord DISABLE TRIGGER audit_append_only",
    "UPDATE audit_auditrecord SET chain_pos = seq, prev_seq = seq - 1",
    "ALTER TABLE audit_auditrecord ENABLE TRIGGER audit_append_only",
    "UPDATE audit_auditchainhead SET last_pos = last_seq",
    "CREATE SEQUENCE audit_record_seq AS bigint",
    "SELECT setval('audit_record_seq', coalesce(max(seq), 0) + 1, false) FROM audit_auditrecord",
    TRIGGER,
]
# Back to the function of 0004 (chain every record first: 0004 refuses NULL hashes).
REVERSE = [
    "DROP SEQUENCE IF EXISTS audit_record_seq",
    *importlib.import_module("audit.migrations.0004_harden1_scope_evidence").FORWARD,
]


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0006_perf_actor_page'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditchainhead',
            name='last_pos',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='auditrecord',
            name='chain_pos',
            field=models.BigIntegerField(blank=True, null=True, unique=True),
        ),
        migrations.AddField(
            model_name='auditrecord',
            name='content_hash',
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AddField(
            model_name='auditrecord',
            name='prev_seq',
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='auditrecord',
            name='hash',
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name='auditrecord',
            name='prev_hash',
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        postgres_only(FORWARD, REVERSE),
        migrations.AddIndex(
            model_name='auditrecord',
            index=models.Index(condition=models.Q(('chain_pos__isnull', True)), fields=['seq'], name='audit_unchained'),
        ),
    ]
