"""Transport from the controller to managed nodes.

Owns the :class:`Connector` interface (run an argument list, put/get files atomically)
and its SSH implementation; node operations are written against the interface only.
Pure Python: importing this package never imports Django.
"""

from .base import (
    AuthenticationFailed,
    CommandFailed,
    CommandResult,
    CommandTimeout,
    Connector,
    ConnectorError,
    HostKeyMismatch,
    InvalidCommand,
    PermanentConnectorError,
    TransientConnectorError,
    UnknownHostKey,
    build_command,
)
from .ssh import SSHConnector, fetch_host_key

__all__ = [
    "AuthenticationFailed",
    "CommandFailed",
    "CommandResult",
    "CommandTimeout",
    "Connector",
    "ConnectorError",
    "HostKeyMismatch",
    "InvalidCommand",
    "PermanentConnectorError",
    "SSHConnector",
    "TransientConnectorError",
    "UnknownHostKey",
    "build_command",
    "fetch_host_key",
]
