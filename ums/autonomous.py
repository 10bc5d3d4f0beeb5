"""Short transactions on a second database connection, committed apart from the caller's.

Some bookkeeping must not wait for the caller's transaction: a refill of a limit escrow
(:mod:`mail.limits`) locks a limit row shared by every create below it, and inside the
create's transaction that lock would last until the create commits. Run on a connection
of its own, the lock lasts one short transaction.

The caller keeps its own transaction open while the work runs, so anything that waits for
a lock the caller holds would wait forever, and PostgreSQL cannot see that cycle (one side
of it is this Python thread). The work therefore runs with a ``lock_timeout``: a wait that
long turns into :class:`Unavailable`, and the caller does the work in its own transaction
instead, where PostgreSQL's deadlock detector sees every wait again. Callers also avoid
the cases they know of (the caller holds the rows the work needs) before trying.

The connection is opened for each transaction and closed after it: no connection is left
behind by threads that end, and the work is rare (a refill serves a batch of creates).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import DatabaseError, connections
from django.db.backends.utils import CursorWrapper

# Wait at most this long for a lock; longer means a cycle through the caller is possible.
LOCK_TIMEOUT_MS = 1000


class Unavailable(Exception):
    """The work could not run apart (a lock wait too long, a deadlock, no connection, or
    data the caller has not committed yet); run it in the caller's transaction instead."""


@contextmanager
def cursor() -> Iterator[CursorWrapper]:
    """A cursor on a second connection to the default database, in autocommit: each
    statement is a transaction of its own, committed as soon as it returns, so a lock it
    takes is held for that statement and its commit only (no round trip to the client in
    between). Bound its lock waits (``lock_timeout``, :data:`LOCK_TIMEOUT_MS`) in the
    statement itself. Database errors become :class:`Unavailable`.
    """
    other = connections.create_connection("default")
    try:
        other.ensure_connection()
        with other.cursor() as own:
            yield own
    except (DatabaseError, psycopg.Error) as exc:
        raise Unavailable(str(exc)) from exc
    finally:
        other.close()
