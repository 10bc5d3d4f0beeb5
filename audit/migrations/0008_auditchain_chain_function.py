"""The chainer's pass as one SQL function: one round trip per pass (issue 19).

``audit_chain_pending(batch)`` tries the chainer's advisory lock (class "AUDT" =
1096107092, object 1: ``audit.chainer.CHAIN_LOCK``) and returns -1 if another session
holds it; else it links up to ``batch`` unchained records in ``seq`` order after the chain
head, exactly as :func:`audit.chain.link_hash` computes (``sha256(prev_hash || '\\n' ||
chain_pos || ':' || prev_seq || ':' || content_hash)``), moves the head and returns how
many it linked. An uncontended append runs it inside its own transaction, so the pass is
one statement there instead of six.
"""

from django.db import migrations

from ums.migration_ops import postgres_only

FORWARD = [
    r"""
    CREATE FUNCTION audit_chain_pending(batch integer) RETURNS bigint AS $$
    DECLARE
        r record;
        pos bigint;
        pseq bigint;
        phash text;
        digest text;
        linked bigint := 0;
    BEGIN
        IF NOT pg_try_advisory_xact_lock(1096107092, 1) THEN
            RETURN -1;
        END IF;
        SELECT last_pos, last_seq, last_hash INTO pos, pseq, phash
        FROM audit_auditchainhead WHERE id = 1;
        IF NOT FOUND THEN
            INSERT INTO audit_auditchainhead (id, last_seq, last_hash, last_pos)
            VALUES (1, 0, repeat('0', 64), 0);
            pos := 0; pseq := 0; phash := repeat('0', 64);
        END IF;
        FOR r IN
            SELECT id, seq, content_hash FROM audit_auditrecord
            WHERE chain_pos IS NULL ORDER BY seq LIMIT batch
        LOOP
            pos := pos + 1;
            digest := encode(sha256(convert_to(
                phash || E'\n' || pos || ':' || pseq || ':' || coalesce(r.content_hash, ''),
                'UTF8')), 'hex');
            UPDATE audit_auditrecord
            SET chain_pos = pos, prev_seq = pseq, prev_hash = phash, hash = digest
            WHERE id = r.id;
            pseq := r.seq;
            phash := digest;
            linked := linked + 1;
        END LOOP;
        IF linked > 0 THEN
            UPDATE audit_auditchainhead SET last_pos = pos, last_seq = pseq, last_hash = phash
            WHERE id = 1;
        END IF;
        RETURN linked;
    END;
    $$ LANGUAGE plpgsql
    """,
]
REVERSE = ["DROP FUNCTION IF EXISTS audit_chain_pending(integer)"]


class Migration(migrations.Migration):
    dependencies = [("audit", "0007_auditchain_deferred_chain")]

    operations = [postgres_only(FORWARD, REVERSE)]
