"""Prefix (subtree) indexes for the materialised customer paths on PostgreSQL.

``LIKE 'path%'`` can use a b-tree only with ``*_pattern_ops`` when the database collation is
not C; the subtree filter of every scoped query depends on these.
"""

from django.db import migrations

from ums.migration_ops import postgres_only


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]

    operations = [
        postgres_only(
            [
                "CREATE INDEX tenants_customer_path_prefix ON tenants_customer "
                "(path varchar_pattern_ops)",
                "CREATE INDEX tenants_admin_path_prefix ON tenants_administrator "
                "(customer_path varchar_pattern_ops)",
                "CREATE INDEX tenants_token_path_prefix ON tenants_apitoken "
                "(customer_path varchar_pattern_ops)",
            ],
            [
                "DROP INDEX IF EXISTS tenants_customer_path_prefix",
                "DROP INDEX IF EXISTS tenants_admin_path_prefix",
                "DROP INDEX IF EXISTS tenants_token_path_prefix",
            ],
        )
    ]
