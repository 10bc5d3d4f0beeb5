"""A faster reading of PostgreSQL ``timestamptz`` values, with the same results.

Django reads every ``timestamptz`` through psycopg's pure-Python loader (it subclasses it
to pin the time zone), which parses the text with a regular expression: about 4 µs a
value, a tenth of the CPU of a first page of 50 mailboxes (one per row). PostgreSQL
writes these values in one canonical form (``DateStyle`` ISO, the session in UTC as
Django sets it): ``2026-12-07 19:43:01.1234+00``, which ``datetime.fromisoformat`` (C)
reads into the very same aware datetime. Anything else (another zone, BC dates, years
beyond 9999, infinity, another ``DateStyle``) goes through Django's loader as before.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.db.backends.signals import connection_created

_UTC = datetime.UTC


def _fast_loader(base: type) -> type:
    """A subclass of the connection's own timestamptz loader (so Django's check of its
    ``timezone`` in ``create_cursor`` still sees the same zone)."""

    class FastTimestamptzLoader(base):  # type: ignore[misc, valid-type]
        def load(self, data: Any) -> datetime.datetime:
            # ``YYYY-MM-DD HH:MM:SS[.ffffff]+00``: 22 to 29 characters.
            if (
                self.timezone is _UTC
                and 22 <= len(data) <= 29
                and data[4] == 45  # "-"
                and data[10] == 32  # " "
                and data[-3:] == b"+00"
            ):
                try:
                    return datetime.datetime.fromisoformat(bytes(data).decode("ascii"))
                except ValueError:
                    pass
            return super().load(data)

    FastTimestamptzLoader.__qualname__ = f"Fast{base.__qualname__}"
    return FastTimestamptzLoader


def install(sender: Any, connection: Any, **kwargs: Any) -> None:
    """On each new connection (PostgreSQL through psycopg 3, the only engine and driver
    of the project): read timestamptz with the fast loader."""
    from psycopg.pq import Format

    adapters = connection.connection.adapters
    oid = adapters.types["timestamptz"].oid
    base = adapters.get_loader(oid, Format.TEXT)
    if base is None or getattr(base, "_ums_fast", False):
        return
    loader = _fast_loader(base)
    loader._ums_fast = True
    adapters.register_loader("timestamptz", loader)


def connect() -> None:
    connection_created.connect(install, dispatch_uid="ums.fastdb.install")
