"""Link committed audit records into the hash chain, one chainer at a time (issue 19).

An action inserts its record unchained: a number from a sequence (``seq``) and the hash of
its own content (``content_hash``), no shared row touched, so actions on unrelated objects
no longer queue on one chain head until their commits. Linking (``chain_pos``,
``prev_seq``, ``prev_hash``, ``hash``) is done here, under a transaction-level advisory lock
that is only ever *tried*: nobody waits for it.

* Right after a record's transaction commits (``transaction.on_commit``) its session runs
  :func:`chain_committed`. If another session holds the lock, that holder checks for
  pending records again after releasing it, so a record committed while the lock was held
  is never left behind (level-triggered hand-off: the loser's commit happened before its
  failed try, the holder's re-check after its release).
* An uncontended append also chains inside its own transaction (:func:`chain_pass` from
  ``append``): one client, a test, a command see their records chained at once, as before.
* :func:`chain_committed` is also the safety net: ``manage.py audit_chain`` (run it from a
  timer) and ``audit_verify`` call it, so records of a session that died between its commit
  and its pass are chained by the next pass.

Records are chained in ``seq`` order among those visible (committed, or the caller's own).
A record whose transaction commits after a higher ``seq`` was chained is simply chained
later: ``chain_pos`` is the order, so a rolled-back transaction's ``seq`` (a gap) needs no
waiting. Subtree moves are ordered by :func:`move_lock` (see ``move_scope``).
"""

from __future__ import annotations

import logging

from django.db import connection, transaction

from . import chain

log = logging.getLogger(__name__)

# pg advisory lock keys (two int4): class "AUDT", object 1 = the chainer, 2 = moves.
_CLASS = 0x41554454
CHAIN_LOCK = (_CLASS, 1)
MOVE_LOCK = (_CLASS, 2)
BATCH = 500


def share_move_lock() -> None:
    """Taken by every append until its commit: a subtree move waits for appends in flight
    and holds new ones back until it commits (shared locks do not conflict with each other)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", MOVE_LOCK)


def move_lock() -> None:
    """Exclusive against every append: the records a move rewrites all precede the move's
    own record in the chain, and none is written with the old path while it runs."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", MOVE_LOCK)


def chain_pass(batch: int = BATCH) -> int | None:
    """Link every visible unchained record; None when another session holds the chainer.

    Call inside a transaction: the lock and the links last until it ends.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", CHAIN_LOCK)
        if not cursor.fetchone()[0]:
            return None
        cursor.execute(
            "INSERT INTO audit_auditchainhead (id, last_seq, last_hash, last_pos) "
            "VALUES (1, 0, %s, 0) ON CONFLICT (id) DO NOTHING",
            [chain.GENESIS],
        )
        cursor.execute(
            "SELECT last_pos, last_seq, last_hash FROM audit_auditchainhead WHERE id = 1"
        )
        pos, prev_seq, prev_hash = cursor.fetchone()
        total = 0
        while True:
            cursor.execute(
                "SELECT id, seq, content_hash FROM audit_auditrecord "
                "WHERE chain_pos IS NULL ORDER BY seq LIMIT %s",
                [batch],
            )
            rows = cursor.fetchall()
            if not rows:
                break
            links = []
            for pk, seq, content in rows:
                pos += 1
                # A record without a content hash (written behind the application's back)
                # is linked as it is; verification reports it.
                digest = chain.link_hash(prev_hash, pos, prev_seq, content or "")
                links.append((pk, pos, prev_seq, prev_hash, digest))
                prev_seq, prev_hash = seq, digest
            values = ",".join(["(%s::bigint, %s::bigint, %s::bigint, %s, %s)"] * len(links))
            cursor.execute(
                "UPDATE audit_auditrecord r SET chain_pos = v.pos, prev_seq = v.prev_seq, "  # noqa: S608
                "prev_hash = v.prev_hash, hash = v.hash "
                f"FROM (VALUES {values}) AS v (id, pos, prev_seq, prev_hash, hash) "
                "WHERE r.id = v.id",
                [value for link in links for value in link],
            )
            total += len(rows)
            if len(rows) < batch:
                break
        if total:
            cursor.execute(
                "UPDATE audit_auditchainhead SET last_pos = %s, last_seq = %s, last_hash = %s "
                "WHERE id = 1",
                [pos, prev_seq, prev_hash],
            )
    return total


def pending() -> int:
    """How many unchained records this session sees."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audit_auditrecord WHERE chain_pos IS NULL")
        return cursor.fetchone()[0]


def chain_committed(max_rounds: int = 100) -> int:
    """Chain what is committed, in short transactions of its own; returns records linked.

    Stops when another session holds the chainer (it re-checks after its release) or when
    nothing is left after this session's release of the lock.
    """
    linked = 0
    for _round in range(max_rounds):
        with transaction.atomic():
            done = chain_pass()
        if done is None:
            break
        linked += done
        if not pending():
            break
    return linked


def chain_after_commit() -> None:
    """The ``on_commit`` step of an append: never fails the request whose action committed."""
    try:
        chain_committed()
    except Exception:  # the next pass (another append, the timer) chains them
        log.exception("audit chaining after commit failed; the next pass will chain")
