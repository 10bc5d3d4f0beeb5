"""PostgreSQL only: byte-order ("C") collation for paths and addresses, prefix indexes.

With the "C" collation one b-tree serves both the subtree filter (``customer_path LIKE
'/1/5/%'``) and the keyset ordering (``ORDER BY customer_path, email``) whatever the
database's default collation is, so a page of a million mailboxes is an index range scan.
Django's extra ``*_like`` (varchar_pattern_ops) indexes on those columns become redundant
and are dropped. The smaller tables get ``varchar_pattern_ops`` subtree indexes like the
tenant tables (tenants/migrations/0002_subtree_indexes.py).
"""

from django.db import migrations

from ums.migration_ops import postgres_only

C_COLUMNS = [
    ("mail_mailbox", "customer_path", 1000),
    ("mail_mailbox", "email", 254),
    ("mail_mailbox", "local_part", 64),
    ("mail_alias", "customer_path", 1000),
    ("mail_alias", "email", 254),
    ("mail_alias", "local_part", 64),
    ("mail_domain", "customer_path", 1000),
    ("mail_domain", "name", 253),
    ("mail_domainalias", "name", 253),
]
PATTERN_TABLES = [
    "mail_domainalias",
    "mail_dkimkey",
    "mail_sievescript",
    "mail_autoresponder",
    "mail_customerpolicy",
    "mail_domainpolicy",
    "mail_mailusage",
    "mail_csvimport",
]

DROP_LIKE = """
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT indexname FROM pg_indexes
           WHERE schemaname = current_schema()
             AND tablename IN ('mail_mailbox', 'mail_alias', 'mail_domain', 'mail_domainalias')
             AND right(indexname, 5) = '_like'
  LOOP
    EXECUTE 'DROP INDEX ' || quote_ident(r.indexname);
  END LOOP;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("mail", "0001_initial")]

    operations = [
        postgres_only(
            [
                *[
                    f'ALTER TABLE {table} ALTER COLUMN {column} TYPE varchar({size}) COLLATE "C"'
                    for table, column, size in C_COLUMNS
                ],
                DROP_LIKE,
                *[
                    f"CREATE INDEX {table}_path_prefix ON {table} "
                    "(customer_path varchar_pattern_ops)"
                    for table in PATTERN_TABLES
                ],
            ],
            [
                *[f"DROP INDEX IF EXISTS {table}_path_prefix" for table in PATTERN_TABLES],
                *[
                    f"ALTER TABLE {table} ALTER COLUMN {column} TYPE varchar({size})"
                    for table, column, size in C_COLUMNS
                ],
            ],
        )
    ]
