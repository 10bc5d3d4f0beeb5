"""Audit pages read key first from indexes that carry the scope; actor names resolved first.

* ``(actor_id, seq)`` and ``(action, seq)`` now include ``customer_path``, and
  ``(actor_name, seq)`` is new, likewise: a scoped page's keys come from the index alone,
  newest first (``audit.models.AuditRecordQuerySet``).
* ``audit_auditactorname`` holds every distinct actor name; a statement-level trigger adds the
  names of each INSERT or COPY (a transition table: one statement per append, not one per
  row of a bulk load). An actor search matches its substring against these few hundred
  names, then filters ``actor_name IN (...)``: the same records as the substring match on
  the records themselves, without the trigram bitmap of every matching record (20,000
  heap pages for a busy actor), so the trigram index of 0005 is dropped.
"""

from django.db import migrations, models

from ums.migration_ops import postgres_only

FORWARD = [
    """
    CREATE FUNCTION audit_note_actor_names() RETURNS trigger AS $$
    BEGIN
        INSERT INTO audit_auditactorname (name)
        SELECT DISTINCT actor_name FROM audit_new_rows
        ON CONFLICT DO NOTHING;
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER audit_note_actor_names AFTER INSERT ON audit_auditrecord "
    "REFERENCING NEW TABLE AS audit_new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_note_actor_names()",
    "INSERT INTO audit_auditactorname (name) SELECT DISTINCT actor_name FROM audit_auditrecord "
    "ON CONFLICT DO NOTHING",
    "DROP INDEX IF EXISTS audit_actor_name_trgm",
]
REVERSE = [
    "CREATE INDEX IF NOT EXISTS audit_actor_name_trgm ON audit_auditrecord "
    "USING GIN (UPPER(actor_name::text) gin_trgm_ops)",
    "ALTER INDEX audit_actor_name_trgm ALTER COLUMN 1 SET STATISTICS 1000",
    "DROP TRIGGER IF EXISTS audit_note_actor_names ON audit_auditrecord",
    "DROP FUNCTION IF EXISTS audit_note_actor_names()",
]


class Migration(migrations.Migration):
    dependencies = [("audit", "0005_perf_actor_trigram")]

    operations = [
        migrations.CreateModel(
            name="AuditActorName",
            fields=[
                ("name", models.CharField(max_length=310, primary_key=True, serialize=False)),
            ],
        ),
        migrations.RemoveIndex(model_name="auditrecord", name="audit_actor_seq"),
        migrations.RemoveIndex(model_name="auditrecord", name="audit_action_seq"),
        migrations.AddIndex(
            model_name="auditrecord",
            index=models.Index(
                fields=["actor_id", "-seq"], include=("customer_path",), name="audit_actor_seq"
            ),
        ),
        migrations.AddIndex(
            model_name="auditrecord",
            index=models.Index(
                fields=["actor_name", "-seq"],
                include=("customer_path",),
                name="audit_actorname_seq",
            ),
        ),
        migrations.AddIndex(
            model_name="auditrecord",
            index=models.Index(
                fields=["action", "-seq"], include=("customer_path",), name="audit_action_seq"
            ),
        ),
        postgres_only(FORWARD, REVERSE),
    ]
