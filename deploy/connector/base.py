"""The connector interface every transport to a node implements, and its error types.

This module owns:

* :class:`Connector`, the abstract interface (connect, run, put/get a file, checksum,
  close) that node operations are written against, in the style of pyinfra's connectors;
* :class:`CommandResult`, what a command returns;
* the error hierarchy, split by whether a retry can help
  (:class:`TransientConnectorError`) or not (:class:`PermanentConnectorError`);
* :func:`build_command`, the one place an argument list becomes the string a remote
  shell parses.

Commands are always argument lists. An SSH "exec" request carries a single string that
the remote user's login shell parses, so the only safe way to pass arguments is to
quote every one of them; callers never build shell strings themselves.

Pure Python, no Django, so it can be tested on its own.
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

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
    "TransientConnectorError",
    "UnknownHostKey",
    "build_command",
    "validate_argv",
]


# --------------------------------------------------------------------------- errors


class ConnectorError(Exception):
    """Base of every error a connector raises. ``host`` names the node when known."""

    def __init__(self, message: str, *, host: str | None = None) -> None:
        super().__init__(message)
        self.host = host


class TransientConnectorError(ConnectorError):
    """Retrying later can help: timeouts, connection refused/reset, no route to host.

    ``attempts`` is how many connection attempts were made before giving up.
    """

    def __init__(self, message: str, *, host: str | None = None, attempts: int = 1) -> None:
        super().__init__(message, host=host)
        self.attempts = attempts


class PermanentConnectorError(ConnectorError):
    """Retrying cannot help until someone changes something (keys, config, the call)."""


class AuthenticationFailed(PermanentConnectorError):
    """The node refused the controller's key."""


class HostKeyMismatch(PermanentConnectorError):
    """The node presented a host key other than the pinned one(s): possible impostor.

    ``expected`` holds the fingerprints of the pinned keys, ``presented`` the fingerprint
    of the key the server showed (``None`` when it offered no key of a pinned type), and
    ``presented_key`` the key itself in ``"type base64"`` form, for an operator to review.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        expected: Sequence[str] = (),
        presented: str | None = None,
        presented_key: str | None = None,
    ) -> None:
        super().__init__(message, host=host)
        self.expected = list(expected)
        self.presented = presented
        self.presented_key = presented_key


class UnknownHostKey(PermanentConnectorError):
    """No host key is pinned for this node, so it cannot be trusted yet (enrol it first)."""

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        presented: str | None = None,
        presented_key: str | None = None,
    ) -> None:
        super().__init__(message, host=host)
        self.presented = presented
        self.presented_key = presented_key


class InvalidCommand(PermanentConnectorError):
    """The argument list is malformed (not a list of strings, or contains NUL)."""


class CommandTimeout(TransientConnectorError):
    """A command ran longer than its timeout and was killed.

    Transient because a retry of the whole (idempotent) operation may well succeed, but
    the command itself may have had partial effects: connectors never re-run it on their
    own. ``stdout``/``stderr`` hold what was read before the timeout.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        argv: Sequence[str] = (),
        timeout: float | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message, host=host)
        self.argv = list(argv)
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr


class CommandFailed(ConnectorError):
    """Raised by :meth:`CommandResult.check` when a command exited non-zero.

    Neither transient nor permanent: the command ran and said no; the caller decides.
    """

    def __init__(self, result: CommandResult, *, host: str | None = None) -> None:
        detail = result.stderr.strip() or result.stdout.strip()
        super().__init__(
            f"command {shlex.join(result.argv)!s} exited {result.exit_code}: {detail[:500]}",
            host=host,
        )
        self.result = result


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CommandResult:
    """Outcome of one remote command. Output is decoded as UTF-8 with replacement."""

    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str
    duration: float
    host: str | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> CommandResult:
        """Return self when the command succeeded, else raise :class:`CommandFailed`."""
        if self.exit_code != 0:
            raise CommandFailed(self, host=self.host)
        return self


# --------------------------------------------------------------------------- argv


def validate_argv(argv: object) -> list[str]:
    """Check ``argv`` is a non-empty list of NUL-free strings and return it as a list.

    Tuples are refused along with everything else that is not a list, so a stray string
    (which is iterable) can never be split into characters by mistake.
    """
    if not isinstance(argv, list):
        raise InvalidCommand(f"command must be a list of str, not {type(argv).__name__}")
    if not argv:
        raise InvalidCommand("command must not be empty")
    for arg in argv:
        if not isinstance(arg, str):
            raise InvalidCommand(f"command arguments must be str, not {type(arg).__name__}")
        if "\0" in arg:
            # A C-level exec cannot carry NUL; the remote side would truncate silently.
            raise InvalidCommand("command arguments must not contain NUL")
    return list(argv)


def build_command(argv: object, *, sudo: bool = False) -> str:
    """Turn an argument list into the string an SSH exec request carries.

    Every argument is quoted with :func:`shlex.quote`, so the remote POSIX shell hands
    each one to the program verbatim: ``$(...)``, ``;``, quotes and newlines stay data.
    With ``sudo`` the command runs through ``sudo -n --`` (non-interactive: fail instead
    of waiting for a password prompt that nobody will answer).
    """
    args = validate_argv(argv)
    if sudo:
        args = ["sudo", "-n", "--", *args]
    return shlex.join(args)


# --------------------------------------------------------------------------- interface


class Connector(abc.ABC):
    """A connection to one node. Not thread-safe: use one connector per thread.

    Implementations connect lazily on first use and reuse one connection until
    :meth:`close`. Methods raise :class:`ConnectorError` subclasses only.
    """

    host: str

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the connection now (retrying transient failures); no-op when open."""

    @abc.abstractmethod
    def run(
        self,
        argv: list[str],
        *,
        timeout: float | None = None,
        input: bytes | None = None,
        sudo: bool = False,
    ) -> CommandResult:
        """Run ``argv`` on the node and return its exit code and output.

        A non-zero exit is a result, not an error (use :meth:`CommandResult.check`).
        ``input`` is fed to the command's stdin, which is then closed. ``timeout``
        (seconds) overrides the connector's default; on expiry the command is killed and
        :class:`CommandTimeout` raised.
        """

    @abc.abstractmethod
    def put_file(
        self,
        remote_path: str,
        data: bytes,
        *,
        mode: int | None = None,
        owner: str | None = None,
        group: str | None = None,
    ) -> None:
        """Atomically replace ``remote_path`` with ``data``.

        The data goes to a temporary file in the same directory, gets its mode and
        ownership, and is then renamed over the target, so readers see either the old
        or the new file, never a partial one. With ``mode``/``owner``/``group`` left
        ``None`` an existing target keeps its mode and ownership.
        """

    @abc.abstractmethod
    def get_file(self, remote_path: str) -> bytes | None:
        """Return the contents of ``remote_path``, or ``None`` when it does not exist."""

    def file_sha256(self, path: str) -> str | None:
        """Hex SHA-256 of a remote file, or ``None`` when it does not exist.

        Computed on the node so a large file need not cross the wire to be compared.
        """
        # LC_ALL=C so the "No such file" message is not translated.
        result = self.run(["env", "LC_ALL=C", "sha256sum", "--", path])
        if result.exit_code == 0:
            digest = result.stdout.split(None, 1)[0] if result.stdout else ""
            # sha256sum escapes names with backslashes by prefixing the line with "\".
            digest = digest.lstrip("\\")
            if len(digest) == 64:
                return digest
            raise PermanentConnectorError(f"unexpected sha256sum output: {result.stdout!r}")
        if "No such file or directory" in result.stderr:
            return None
        raise CommandFailed(result, host=self.host)

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection. Safe to call more than once."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
