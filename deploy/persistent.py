"""SSH connections kept open between metric sweeps, like Ansible's ControlPersist.

A sweep of 500 nodes spends most of its time in SSH handshakes (key exchange, host key
check, public key login: tens of milliseconds of CPU on the controller and the node each);
the command itself is a few milliseconds. The worker that runs the sweeps keeps each
node's connection for up to ``UMS_METRICS_PERSIST_SECONDS`` and opens a channel on it
for the next sweep.

What still holds:
- the pinned host key and the controller key are checked at every handshake, so at most
  that many seconds after a change; the connection's key includes the node's address,
  port, pinned keys and controller key version, so a change made through UMS (accepting
  a new host key, rotating the controller key) uses a new connection at once;
- a connection that fails is closed, and the caller retries once on a fresh one (a
  connection idle across a node reboot is dead, not a missed collection);
- connections of nodes no longer swept (decommissioned, offline, key alert) are closed at
  the end of the sweep;
- a forked process (Celery's prefork pool) never uses its parent's sockets.

Only the metric sweep uses this: jobs that change nodes open their own session
(``deploy.nodes.session``) and close it, as before.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.conf import settings

from servers.models import Node

from .connector.base import HostKeyMismatch
from .connector.ssh import SSHConnector
from .nodes import connector_for, flag_mismatch

PoolKey = tuple[int, str, int, tuple[str, ...], int | None]


def key_of(node: Node) -> PoolKey:
    return (
        node.pk,
        node.ssh_address,
        node.ssh_port,
        tuple(node.pinned_host_keys or ()),
        node.controller_key_version,
    )


class ConnectionPool:
    """Idle connections by node; a connection is used by one thread at a time (taken out
    while in use, put back after a clean use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[PoolKey, tuple[SSHConnector, float]] = {}
        self._pid = os.getpid()

    def _own(self) -> None:
        # After a fork the parent's sockets are shared: forget them without closing.
        if self._pid != os.getpid():
            self._idle = {}
            self._pid = os.getpid()

    def take(self, key: PoolKey, max_age: float) -> tuple[SSHConnector, float] | None:
        with self._lock:
            self._own()
            found = self._idle.pop(key, None)
        if found is None:
            return None
        connector, opened_at = found
        if time.monotonic() - opened_at > max_age or not connector.is_connected:
            connector.close()
            return None
        return found

    def give(self, key: PoolKey, connector: SSHConnector, opened_at: float) -> None:
        with self._lock:
            self._own()
            previous = self._idle.pop(key, None)
            self._idle[key] = (connector, opened_at)
        if previous is not None:
            previous[0].close()

    def close_except(self, keep: Iterable[PoolKey]) -> int:
        """Close the idle connections whose node is not in ``keep``; how many."""
        wanted = set(keep)
        with self._lock:
            self._own()
            gone = [k for k in self._idle if k not in wanted]
            closing = [self._idle.pop(k)[0] for k in gone]
        for connector in closing:
            connector.close()
        return len(closing)

    def close_all(self) -> None:
        self.close_except(())

    def __len__(self) -> int:
        return len(self._idle)


POOL = ConnectionPool()


@contextmanager
def session(node: Node, *, pool: ConnectionPool = POOL) -> Iterator[tuple[SSHConnector, bool]]:
    """``(connector, reused)``: the node's kept connection if it has one young enough,
    else a new one; put back after the block unless the block raised."""
    max_age = settings.UMS_METRICS_PERSIST_SECONDS
    key = key_of(node)
    found = pool.take(key, max_age) if max_age > 0 else None
    if found is not None:
        connector, opened_at = found
        reused = True
    else:
        connector, opened_at, reused = connector_for(node), time.monotonic(), False
        try:
            connector.connect()
        except HostKeyMismatch as exc:
            flag_mismatch(node, exc)
            raise
    try:
        yield connector, reused
    except BaseException:
        connector.close()
        raise
    if max_age > 0 and connector.is_connected:
        pool.give(key, connector, opened_at)
    else:
        connector.close()
