"""The escrow refill plans its statements before it locks the limit row (issue 19).

A backend's first call of ``mail_escrow_refill`` (migration 0008) planned each statement
when it first reached it, so the usage sums and the grant were planned with the level's
limit row locked: milliseconds per new connection, during which every other refill of the
level waited. A burst of 16 refills on fresh connections (every customer's escrow taken
back by a limit change, then 16 creates at once) had PostgreSQL log waits of 14-28 ms for
most of them (``log_lock_waits`` with ``deadlock_timeout = 1ms``).

The function now reads the limit row and the sums once without the lock (pass 0), then
locks and reads again (pass 1), in one loop, so pass 1 runs the plans pass 0 made. The
grant (the escrow ``INSERT``) is still planned on first use under the lock. Same
signature, same results: pass 0 only reads.
"""

import importlib

from django.db import migrations

from ums.migration_ops import postgres_only

FORWARD = [
    r"""
    CREATE OR REPLACE FUNCTION mail_escrow_refill(
        owner bigint, holder bigint, needs bigint[], apart boolean,
        creates integer, share integer, wait_ms integer
    ) RETURNS TABLE (granted boolean, used bigint[], slack bigint[], caps bigint[], xid bigint)
    AS $$
    DECLARE
        lim record;
        cap bigint[];
        u bigint[];
        e bigint[];
        g bigint[] := ARRAY[0, 0, 0, 0];
        short boolean := false;
        path_like text;
    BEGIN
        IF apart THEN
            PERFORM set_config('lock_timeout', wait_ms || 'ms', true);
            PERFORM set_config('synchronous_commit', 'off', true);
        END IF;
        -- Pass 0 reads without the lock, pass 1 again under it. The reads themselves are
        -- cheap; what pass 0 is for is the first call in a backend, which plans every
        -- statement it reaches (milliseconds): planned in pass 0, the statements run from
        -- their kept plans in pass 1, while the row that every refill of this level waits
        -- for is locked.
        FOR pass IN 0..1 LOOP
            IF pass = 0 THEN
                SELECT customer_path, max_domains, max_mailboxes, max_aliases, max_quota_gb
                INTO lim FROM tenants_resourcelimit WHERE customer_id = owner;
            ELSE
                SELECT customer_path, max_domains, max_mailboxes, max_aliases, max_quota_gb
                INTO lim FROM tenants_resourcelimit WHERE customer_id = owner FOR UPDATE;
            END IF;
            IF NOT FOUND THEN
                RETURN;
            END IF;
            -- The prefix as a LIKE pattern (mail.limits._like_prefix); chr(37) is the percent
            -- sign, which this migration cannot write (its SQL goes through placeholders).
            path_like := replace(replace(replace(lim.customer_path, E'\\', E'\\\\'),
                                         chr(37), E'\\' || chr(37)), '_', E'\\_') || chr(37);
            cap := ARRAY[lim.max_domains, lim.max_mailboxes, lim.max_aliases,
                         lim.max_quota_gb::bigint * 1024];
            FOR attempt IN 1..2 LOOP
                WITH uu AS (
                    SELECT COALESCE(SUM(domains), 0) AS d, COALESCE(SUM(mailboxes), 0) AS m,
                           COALESCE(SUM(aliases), 0) AS a, COALESCE(SUM(quota_mb), 0) AS q
                    FROM mail_mailusage WHERE customer_path LIKE path_like
                ), ee AS (
                    SELECT COALESCE(SUM(domains), 0) AS d, COALESCE(SUM(mailboxes), 0) AS m,
                           COALESCE(SUM(aliases), 0) AS a, COALESCE(SUM(quota_mb), 0) AS q
                    FROM tenants_limitescrow WHERE limit_owner_id = owner
                )
                SELECT ARRAY[uu.d, uu.m, uu.a, uu.q]::bigint[],
                       ARRAY[ee.d, ee.m, ee.a, ee.q]::bigint[]
                INTO u, e FROM uu, ee;
                short := false;
                FOR i IN 1..4 LOOP
                    IF needs[i] > 0 AND cap[i] IS NOT NULL AND cap[i] - u[i] - e[i] < needs[i] THEN
                        short := true;
                    END IF;
                END LOOP;
                EXIT WHEN pass = 0 OR NOT short OR attempt = 2;
                UPDATE tenants_limitescrow SET domains = 0, mailboxes = 0, aliases = 0, quota_mb = 0
                WHERE limit_owner_id = owner
                AND (domains > 0 OR mailboxes > 0 OR aliases > 0 OR quota_mb > 0);
            END LOOP;
        END LOOP;
        IF short THEN
            RETURN QUERY SELECT false, u, e, cap, txid_current();
            RETURN;
        END IF;
        FOR i IN 1..4 LOOP
            IF needs[i] > 0 AND cap[i] IS NOT NULL THEN
                g[i] := GREATEST(0, LEAST(needs[i] * creates,
                                          (cap[i] - u[i] - e[i] - needs[i]) / share))
                        + CASE WHEN apart THEN needs[i] ELSE 0 END;
            END IF;
        END LOOP;
        INSERT INTO tenants_limitescrow AS t
            (limit_owner_id, holder_id, domains, mailboxes, aliases, quota_mb)
        VALUES (owner, holder, g[1], g[2], g[3], g[4])
        ON CONFLICT (limit_owner_id, holder_id) DO UPDATE SET
            domains = t.domains + EXCLUDED.domains, mailboxes = t.mailboxes + EXCLUDED.mailboxes,
            aliases = t.aliases + EXCLUDED.aliases, quota_mb = t.quota_mb + EXCLUDED.quota_mb;
        RETURN QUERY SELECT true, u, e, cap, txid_current();
    END;
    $$ LANGUAGE plpgsql
    """,
]
# Back to migration 0008's function (its own text, made to replace this one).
_BEFORE = importlib.import_module("mail.migrations.0008_writes_escrow_refill")
REVERSE = [
    sql.replace(
        "CREATE FUNCTION mail_escrow_refill(", "CREATE OR REPLACE FUNCTION mail_escrow_refill("
    )
    for sql in _BEFORE.FORWARD
]


class Migration(migrations.Migration):
    dependencies = [("mail", "0008_writes_escrow_refill")]

    operations = [postgres_only(FORWARD, REVERSE)]
