"""Streams between nodes that do not trust each other: the controller relays them.

Nodes hold no SSH keys for one another, so a ``zfs send`` on one node reaches a
``zfs receive`` on another through the controller: one SSH channel reads the sender's
stdout, another writes the receiver's stdin, in chunks (never the whole stream in
memory). The same two halves serve the object copies: :func:`command_output` is an
iterator of chunks a target driver can store (encrypted), and :func:`feed_command` takes
any iterator of chunks (a decrypted object) into a node's command.

A stream cut anywhere (a killed worker, a dropped connection, the receiving sshd gone)
leaves the receiver with a truncated stream, which ``zfs receive`` discards: the
dataset stays at its last complete snapshot, so the next run simply sends again.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from deploy.connector.base import Connector, build_command

CHUNK = 1024 * 1024
#: How long a channel may stay silent before the relay gives up (a hung node).
IDLE_TIMEOUT = 600.0
_STDERR_MAX = 64 * 1024


class StreamError(Exception):
    """A side of a stream failed; the message carries the command's own words."""


def _channel(conn: Connector, argv: list[str]) -> Any:
    """An exec channel running ``argv`` on ``conn``'s node (an SSH connector)."""
    opener = getattr(conn, "_open_channel", None)
    if opener is None:
        raise StreamError(f"{type(conn).__name__} cannot stream (SSH connectors only)")
    channel = opener()
    channel.settimeout(IDLE_TIMEOUT)
    channel.exec_command(build_command(argv))
    return channel


def _drain_stderr(channel: Any, into: bytearray) -> None:
    while channel.recv_stderr_ready():
        piece = channel.recv_stderr(4096)
        if not piece:
            break
        if len(into) < _STDERR_MAX:
            into += piece


def _finish(channel: Any, argv: list[str], stderr: bytearray, host: str) -> None:
    """Wait for the exit status; :class:`StreamError` unless it is 0."""
    deadline = time.monotonic() + IDLE_TIMEOUT
    while not channel.exit_status_ready():
        _drain_stderr(channel, stderr)
        if time.monotonic() > deadline:
            raise StreamError(f"{argv[0]} on {host} did not finish")
        time.sleep(0.02)
    _drain_stderr(channel, stderr)
    code = channel.recv_exit_status()
    if code != 0:
        detail = stderr.decode("utf-8", "replace").strip()[:500]
        raise StreamError(f"{' '.join(argv[:2])} on {host} exited {code}: {detail}")


def _feed_stdin(channel: Any, data: bytes, failed: list[BaseException]) -> None:
    """Write ``data`` to the command's stdin, then end it (a thread: the command may
    write its stdout while still reading, and a full window on either side would stall
    a single-threaded writer)."""
    try:
        channel.sendall(data)
        channel.shutdown_write()
    except Exception as exc:  # reported with the command's exit status
        failed.append(exc)


def command_output(
    conn: Connector, argv: list[str], *, stdin: bytes | None = None
) -> Iterator[bytes]:
    """The stdout of ``argv`` on the node, chunk by chunk; raises :class:`StreamError` at
    the end when the command failed, so a consumer never commits a failed stream.

    ``stdin``: data for the command's standard input (e.g. a file list), else none."""
    channel = _channel(conn, argv)
    stderr = bytearray()
    failed: list[BaseException] = []
    if stdin is not None:
        threading.Thread(target=_feed_stdin, args=(channel, stdin, failed), daemon=True).start()
    try:
        while True:
            try:
                piece = channel.recv(CHUNK)
            except TimeoutError as exc:
                raise StreamError(f"{argv[0]} on {conn.host} sent nothing for too long") from exc
            _drain_stderr(channel, stderr)
            if not piece:
                break
            yield piece
        _finish(channel, argv, stderr, conn.host)
        if failed:
            raise StreamError(f"{argv[0]} on {conn.host}: its input was cut: {failed[0]}")
    finally:
        with contextlib.suppress(Exception):
            channel.close()


def feed_command(
    conn: Connector,
    argv: list[str],
    chunks: Iterable[bytes],
    *,
    progress: Callable[[int], None] = lambda sent: None,
) -> tuple[int, str]:
    """Write ``chunks`` to the stdin of ``argv`` on the node; (bytes, sha256 hex).

    The receiver's exit status decides: if it refuses the stream half-way, the error
    names its reason rather than the broken pipe.
    """
    channel = _channel(conn, argv)
    stderr = bytearray()
    digest = hashlib.sha256()
    sent = 0
    last_report = 0
    try:
        try:
            for piece in chunks:
                digest.update(piece)
                channel.sendall(piece)
                sent += len(piece)
                _drain_stderr(channel, stderr)
                if sent - last_report >= 16 * CHUNK:
                    last_report = sent
                    progress(sent)
        except OSError as exc:
            # The receiver closed its end: its exit status and stderr say why.
            with contextlib.suppress(StreamError):
                _finish(channel, argv, stderr, conn.host)
            detail = stderr.decode("utf-8", "replace").strip()[:500]
            raise StreamError(f"{argv[0]} on {conn.host} stopped reading: {detail or exc}") from exc
        channel.shutdown_write()
        _finish(channel, argv, stderr, conn.host)
    finally:
        with contextlib.suppress(Exception):
            channel.close()
    progress(sent)
    return sent, digest.hexdigest()


def relay(
    source: Connector,
    send_argv: list[str],
    dest: Connector,
    receive_argv: list[str],
    *,
    progress: Callable[[int], None] = lambda sent: None,
) -> tuple[int, str]:
    """``send_argv`` on ``source`` piped into ``receive_argv`` on ``dest``."""
    return feed_command(dest, receive_argv, command_output(source, send_argv), progress=progress)
