"""The daily usage snapshot: one ``DailyUsage`` row per customer for a day, own and subtree.

Own figures come from tables already kept per customer or one GROUP BY each (mail counts
from ``mail.MailUsage``, used bytes from ``mail.Mailbox.used_bytes``, cloud files bytes and
users from ``cloudfiles.CloudAccount``, held mail from ``spamhold``); subtree sums are
added bottom-up in Python along each materialised path (depth × customers additions),
then all rows go in with one COPY and one upsert. The whole snapshot is one transaction: a
run killed midway leaves the day as it was, and running it again for the same day
rewrites the same rows (idempotent).
"""

from __future__ import annotations

import datetime
import io

from django.db import connection, transaction
from django.utils import timezone

from .models import FIGURES, DailyUsage

# Every figure is measured now (kept for the API's ``not_built`` field and the portal).
NOT_BUILT: tuple[str, ...] = ()

_OWN_SQL = {
    "mail": (
        "SELECT customer_id, mailboxes, aliases, domains, quota_mb FROM mail_mailusage",
        ("mailboxes", "aliases", "domains", "quota_mb"),
    ),
    "used": (
        "SELECT customer_id, SUM(used_bytes) FROM mail_mailbox "
        "WHERE used_bytes IS NOT NULL GROUP BY customer_id",
        ("used_bytes",),
    ),
    # Cloud files (cloudfiles.CloudAccount): bytes measured on the cloud files nodes, and
    # the accounts the last converge left enabled (see cloudfiles.accounts).
    "files": (
        "SELECT customer_id, SUM(used_bytes), COUNT(*) FILTER (WHERE active) "
        "FROM cloudfiles_cloudaccount GROUP BY customer_id",
        ("files_bytes", "files_users"),
    ),
    # Team chat (chat.ChatAccount): the users the last sync of each organisation left, by
    # their mailbox's customer (the last id of the path).
    "chat": (
        "SELECT (regexp_match(customer_path, '([0-9]+)/$'))[1]::bigint, COUNT(*) "
        "FROM chat_chataccount WHERE is_active GROUP BY 1",
        ("chat_users",),
    ),
    "held": (
        "SELECT customer_id, COUNT(*) FROM spamhold_heldmessage "
        "WHERE status = 'ONHOLD' AND customer_id IS NOT NULL GROUP BY customer_id",
        ("held_messages",),
    ),
}


def own_figures() -> tuple[dict[int, tuple[str, int | None]], dict[int, list[int]]]:
    """({customer id: (path, parent id)}, {customer id: own figures in FIGURES order})."""
    index = {name: i for i, name in enumerate(FIGURES)}
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, path, parent_id FROM tenants_customer")
        customers = {row[0]: (row[1], row[2]) for row in cursor.fetchall()}
        own = {pk: [0] * len(FIGURES) for pk in customers}
        for sql, columns in _OWN_SQL.values():
            cursor.execute(sql)
            for row in cursor.fetchall():
                values = own.get(row[0])
                if values is None:
                    continue  # a customer created since the first query: next snapshot
                for name, value in zip(columns, row[1:], strict=True):
                    values[index[name]] = int(value or 0)
    return customers, own


def subtree_sums(
    customers: dict[int, tuple[str, int | None]], own: dict[int, list[int]]
) -> dict[int, list[int]]:
    """Each customer's own figures plus those of every descendant (via the paths)."""
    tree = {pk: list(values) for pk, values in own.items()}
    width = len(FIGURES)
    for pk, (path, _parent) in customers.items():
        values = own[pk]
        if not any(values):
            continue
        for part in path.strip("/").split("/")[:-1]:
            target = tree.get(int(part))
            if target is not None:
                for i in range(width):
                    target[i] += values[i]
    return tree


def take(day: datetime.date | None = None) -> int:
    """Write the snapshot of ``day`` (today, UTC) for every customer; rows written."""
    day = day or timezone.now().date()
    now = timezone.now()
    columns = [f"own_{n}" for n in FIGURES] + [f"tree_{n}" for n in FIGURES]
    table = DailyUsage._meta.db_table
    with transaction.atomic():
        customers, own = own_figures()
        tree = subtree_sums(customers, own)
        buffer = io.StringIO()
        for pk, (path, parent) in customers.items():
            fields = [str(pk), path, r"\N" if parent is None else str(parent)]
            fields += [str(v) for v in own[pk]] + [str(v) for v in tree[pk]]
            buffer.write("\t".join(fields) + "\n")
        buffer.seek(0)
        names = ", ".join(columns)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns)
        with connection.cursor() as cursor:
            # ON COMMIT DROP alone is not enough inside an outer transaction (tests, a caller's
            # atomic block): the table is dropped here too.
            cursor.execute("DROP TABLE IF EXISTS usage_snapshot_load")
            cursor.execute(
                "CREATE TEMP TABLE usage_snapshot_load (customer_id bigint, customer_path "
                f"varchar(1000), parent_id bigint, {', '.join(c + ' bigint' for c in columns)}"
                ") ON COMMIT DROP"
            )
            with cursor.cursor.copy(  # psycopg 3
                f"COPY usage_snapshot_load (customer_id, customer_path, parent_id, {names}) "
                "FROM STDIN"
            ) as copy:
                copy.write(buffer.getvalue())
            # Table and column names come from the model; the day and time are parameters.
            cursor.execute(
                f"INSERT INTO {table} (customer_id, customer_path, parent_id_at_day, day, "  # noqa: S608
                f"taken_at, {names}) SELECT customer_id, customer_path, parent_id, %s, %s, "
                f"{names} FROM usage_snapshot_load ON CONFLICT (customer_id, day) DO UPDATE SET "
                "customer_path = EXCLUDED.customer_path, "
                "parent_id_at_day = EXCLUDED.parent_id_at_day, "
                f"taken_at = EXCLUDED.taken_at, {updates}",
                [day, now],
            )
            written = cursor.rowcount
            cursor.execute("DROP TABLE usage_snapshot_load")
    return written
