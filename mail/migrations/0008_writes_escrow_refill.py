"""An escrow refill as one SQL function: the limit row is locked for one statement (issue 19).

``mail_escrow_refill(owner, holder, needs, apart, creates, share, wait_ms)`` locks the
limit row of customer ``owner`` (``tenants_resourcelimit``), reads the usage of its subtree
(``mail_mailusage`` rows under the path the locked row holds) and every unit of
its limits granted in escrow (``tenants_limitescrow``) in ONE statement (one snapshot: a
create committing meanwhile moves its units from escrow to usage as a whole), and:

- when ``needs`` (domains, mailboxes, aliases, quota MB) fit under the capped limits,
  grants ``holder`` a batch ahead (at most ``creates`` times the need and a ``share``-th of
  what stays free), plus ``needs`` themselves when ``apart`` (the refill commits on its
  own, the create then takes them from its escrow), and returns ``granted = true``;
- else takes every holder's unused escrow back (waiting for the creates consuming some),
  reads again and grants as above, or returns ``granted = false`` with the usage, escrow
  and caps to word the refusal;
- returns no row when the limit row does not exist (or is not committed yet).

Each statement of a PL/pgSQL function takes a new snapshot (READ COMMITTED), so the reads
after the lock see every refill and take-back committed before it. Called apart (one
statement in autocommit on a second connection, ``ums.autonomous``) the row is locked
for this statement and its commit only; ``wait_ms`` bounds its lock waits, and its commit
need not wait for the disk: the create that uses the units commits after it, and that
commit's flush makes this one durable too (a crash before loses both: nothing used).
The function also returns the transaction id, so that the in-transaction caller knows
that it holds the level's rows.
"""

from django.db import migrations

from ums.migration_ops import postgres_only

FORWARD = [
    r"""
    CREATE FUNCTION mail_escrow_refill(
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
        SELECT customer_path, max_domains, max_mailboxes, max_aliases, max_quota_gb INTO lim
        FROM tenants_resourcelimit WHERE customer_id = owner FOR UPDATE;
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
            SELECT ARRAY[uu.d, uu.m, uu.a, uu.q]::bigint[], ARRAY[ee.d, ee.m, ee.a, ee.q]::bigint[]
            INTO u, e FROM uu, ee;
            short := false;
            FOR i IN 1..4 LOOP
                IF needs[i] > 0 AND cap[i] IS NOT NULL AND cap[i] - u[i] - e[i] < needs[i] THEN
                    short := true;
                END IF;
            END LOOP;
            EXIT WHEN NOT short OR attempt = 2;
            UPDATE tenants_limitescrow SET domains = 0, mailboxes = 0, aliases = 0, quota_mb = 0
            WHERE limit_owner_id = owner
            AND (domains > 0 OR mailboxes > 0 OR aliases > 0 OR quota_mb > 0);
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
REVERSE = [
    "DROP FUNCTION IF EXISTS mail_escrow_refill(bigint, bigint, bigint[], boolean, integer, "
    "integer, integer)"
]


class Migration(migrations.Migration):
    dependencies = [("mail", "0007_csvhash_pending_password"), ("tenants", "0008_perf_limit_escrow")]

    operations = [postgres_only(FORWARD, REVERSE)]
