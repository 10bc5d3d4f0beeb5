"""PostgreSQL: full-text search column, subtree index, and append-only enforcement.

* ``search_vector`` is a generated tsvector over ``search_text`` with a GIN index. Its
  statistics target is raised: with the default the planner preferred the timestamp index
  for rare words and took seconds (see shared/notes/performance.md).
* A trigger refuses DELETE and any UPDATE except of the denormalised ``customer_path``
  (rewritten when a subtree moves), so the log is append-only even for code that bypasses
  the ORM. The hash chain still catches anyone who disables the trigger.
"""

from django.db import migrations

from ums.migration_ops import postgres_only

FORWARD = [
    "ALTER TABLE audit_auditrecord ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple', search_text)) STORED",
    "CREATE INDEX audit_search_vector ON audit_auditrecord USING GIN (search_vector)",
    "ALTER TABLE audit_auditrecord ALTER COLUMN search_vector SET STATISTICS 1000",
    "CREATE INDEX audit_customer_path_prefix ON audit_auditrecord "
    "(customer_path varchar_pattern_ops, seq)",
    """
    CREATE FUNCTION audit_append_only() RETURNS trigger AS $$
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
    "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_auditrecord "
    "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
]

REVERSE = [
    "DROP TRIGGER IF EXISTS audit_append_only ON audit_auditrecord",
    "DROP FUNCTION IF EXISTS audit_append_only()",
    "DROP INDEX IF EXISTS audit_customer_path_prefix",
    "DROP INDEX IF EXISTS audit_search_vector",
    "ALTER TABLE audit_auditrecord DROP COLUMN IF EXISTS search_vector",
]


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [postgres_only(FORWARD, REVERSE)]
