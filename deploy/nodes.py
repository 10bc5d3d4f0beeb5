"""Opening SSH sessions to enrolled nodes, with the controller key and pinned host keys.

Every connection to a node goes through :func:`session`: a host key that does not match
stops the connection, flags the node and tells the administrators, and no further
connection is attempted until someone accepts the new key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from servers import actions as server_actions
from servers.models import Node

from . import controller_keys
from .connector.base import ConnectorError, HostKeyMismatch, PermanentConnectorError
from .connector.ssh import SSHConnector


class NodeUnavailable(PermanentConnectorError):
    """The controller will not talk to this node (not approved, or its host key changed)."""


def connector_for(node: Node, *, timeout: float | None = None) -> SSHConnector:
    """The node's connector; ``timeout`` (seconds) bounds each step and disables retries."""
    if not node.pinned_host_keys:
        raise NodeUnavailable(f"{node.hostname} has no pinned host key (approve it first)")
    if node.host_key_alert:
        raise NodeUnavailable(f"{node.hostname}: {node.host_key_alert}")
    key = controller_keys.by_version(node.controller_key_version)
    return SSHConnector(
        node.ssh_address,
        node.ssh_port,
        username="root",
        pkey=controller_keys.private_key(key),
        known_host_keys=node.pinned_host_keys,
        connect_timeout=timeout or settings.UMS_SSH_CONNECT_TIMEOUT,
        command_timeout=timeout or settings.UMS_SSH_COMMAND_TIMEOUT,
        retries=0 if timeout else settings.UMS_SSH_RETRIES,
    )


@contextmanager
def session(node: Node, *, timeout: float | None = None) -> Iterator[SSHConnector]:
    """A connected session; one connection reused for everything inside the block.

    ``timeout`` is for reads made while someone waits (a portal page): each step (TCP,
    SSH banner, key exchange, login, command) gets that many seconds and nothing is retried.
    """
    connector = connector_for(node, timeout=timeout)
    try:
        try:
            connector.connect()
        except HostKeyMismatch as exc:
            flag_mismatch(node, exc)
            raise
        yield connector
    finally:
        connector.close()


def flag_mismatch(node: Node, exc: HostKeyMismatch) -> None:
    """Flag the node and tell the administrators: no connection until a key is accepted."""
    server_actions.flag_host_key_mismatch(node, exc.presented or "unknown")


def describe_error(exc: ConnectorError) -> str:
    return f"{type(exc).__name__}: {exc}"
