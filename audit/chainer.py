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
* An append nested in an outer transaction block (a command's, a test's) also chains
  inside that transaction (:func:`chain_pass` from ``append``), since its commit may be far
  off: a test or a command sees its records chained at once. An action on its own commits
  right after its append, and the pass after that commit chains the record before the
  action returns.
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

log = logging.getLogger(__name__)

# pg advisory lock keys (two int4): class "AUDT", object 1 = the chainer, 2 = moves.
_CLASS = 0x41554454
CHAIN_LOCK = (_CLASS, 1)
MOVE_LOCK = (_CLASS, 2)
BATCH = 500


def next_seq() -> int:
    """The next record number, under the shared move lock every append holds until its
    commit: a subtree move waits for appends in flight and holds new ones back until it
    commits (shared locks do not conflict with each other). One round trip for both."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval('audit_record_seq') FROM pg_advisory_xact_lock_shared(%s, %s)",
            MOVE_LOCK,
        )
        return cursor.fetchone()[0]


def move_lock() -> None:
    """Exclusive against every append: the records a move rewrites all precede the move's
    own record in the chain, and none is written with the old path while it runs."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", MOVE_LOCK)


def chain_pass(batch: int = BATCH) -> int | None:
    """Link every visible unchained record; None when another session holds the chainer
    (before this pass linked anything).

    Inside a transaction the lock and the links last until it ends; in autocommit (the
    after-commit pass of :func:`chain_committed`) each call below is a transaction of its
    own, which releases the lock at the end of its statement. Each call of the
    SQL function ``audit_chain_pending`` (migration 0008) is one round trip linking up to
    ``batch`` records with :func:`audit.chain.link_hash`'s formula.
    """
    total = 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT audit_chain_pending(%s)", [batch])
            linked = cursor.fetchone()[0]
            if linked < 0:
                # In autocommit each call is a transaction of its own, so another session
                # can take the lock between two calls: what this pass linked still counts.
                return total or None
            total += linked
            if linked < batch:
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
    # Outside any transaction (the on_commit step of a request) each call of the SQL
    # function is its own implicit transaction, so the lock is released at the end of the
    # statement exactly as at a COMMIT: no BEGIN/COMMIT round trips needed. Inside an
    # atomic block (a command, a test) the pass gets a savepoint as before.
    autocommit = connection.get_autocommit() and not connection.in_atomic_block
    for _round in range(max_rounds):
        if autocommit:
            done = chain_pass()
        else:
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
