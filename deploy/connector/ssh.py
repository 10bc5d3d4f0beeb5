"""SSH implementation of the connector interface, on paramiko.

This module owns how the controller talks SSH to a node:

* the TCP socket is created here so TCP_NODELAY can be set (paramiko does not set it;
  measured: a command on an open connection drops from ~47 ms to a few ms) and delayed
  ACKs are avoided (connect + first command ~95 ms -> ~50 ms, see _QuickAckSocket);
* host keys are trusted only when pinned (OpenSSH ``"type base64"`` strings stored per
  node); there is no "trust on first use" except the explicit
  ``accept_any_host_key_and_report`` mode and :func:`fetch_host_key`, both meant for
  enrolment, where an operator confirms the fingerprint;
* one SSH connection (paramiko ``Transport``) is reused for every command and SFTP
  transfer during the connector's lifetime;
* only *connecting* is retried (exponential backoff with jitter, transient errors only);
  a command that may have started is never re-run here, because node operations decide
  themselves whether a repeat is safe;
* commands time out: they run under coreutils ``timeout`` on the node, which kills the
  whole process group (SIGTERM, then SIGKILL), and the client gives up a little later
  should the node stop answering.

Pure Python, no Django.
"""

from __future__ import annotations

import contextlib
import errno
import posixpath
import random
import secrets
import select
import socket
import stat
import time
from collections.abc import Sequence

import paramiko
from paramiko.ssh_exception import IncompatiblePeer

from .base import (
    AuthenticationFailed,
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
    validate_argv,
)
from .keys import InvalidKeyError, fingerprint_sha256, load_public_key

__all__ = ["SSHConnector", "fetch_host_key"]

# Host key algorithms paramiko may negotiate for a pinned key of a given type. Limiting
# negotiation to the pinned types matters: otherwise a server holding both an Ed25519 and
# an ECDSA key presents its preferred one and a correct ECDSA pin looks like a mismatch.
_HOST_KEY_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    # An RSA host key is signed with SHA-2 (RFC 8332); SHA-1 "ssh-rsa" is not offered.
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}

_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
        errno.EPIPE,
    }
)

_READ_CHUNK = 65536
# Linux only; elsewhere the plain socket is used.
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
# Seconds between SIGTERM and SIGKILL for a command over its time limit.
_KILL_GRACE = 2.0


def _key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def _translate_network_error(exc: BaseException, host: str, what: str) -> ConnectorError:
    """Map a low-level exception to transient (retry can help) or permanent."""
    if isinstance(exc, ConnectorError):
        return exc
    message = f"{what} {host}: {exc or type(exc).__name__}"
    if isinstance(exc, paramiko.AuthenticationException):
        return AuthenticationFailed(message, host=host)
    if isinstance(exc, IncompatiblePeer):
        # No common algorithm: configuration, not luck, so retrying cannot help.
        return PermanentConnectorError(message, host=host)
    if isinstance(exc, socket.gaierror):
        # EAI_AGAIN is a resolver hiccup; a name that does not exist stays so.
        if exc.errno == socket.EAI_AGAIN:
            return TransientConnectorError(message, host=host)
        return PermanentConnectorError(message, host=host)
    if isinstance(exc, TimeoutError | socket.timeout):
        return TransientConnectorError(message, host=host)
    if isinstance(exc, OSError):
        if exc.errno in _TRANSIENT_ERRNOS or exc.errno is None:
            return TransientConnectorError(message, host=host)
        return PermanentConnectorError(message, host=host)
    if isinstance(exc, paramiko.SSHException | EOFError):
        # Banner/kex failures and EOF during negotiation: typically sshd throttling
        # unauthenticated connections (MaxStartups), restarting, or a dropped link.
        return TransientConnectorError(message, host=host)
    return PermanentConnectorError(message, host=host)


class _QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges received data at once instead of delaying the ACK.

    sshd does not set TCP_NODELAY on non-interactive sessions, so Nagle's algorithm
    holds its next small packet until the previous one is acknowledged. After login it
    sends two packets the client does not answer (the "hostkeys-00" notice and a debug
    message), so the client's delayed ACK (~40 ms) stalled the first channel open:
    connect + first command took ~95 ms, ~50 ms with this. On Linux, setting
    TCP_QUICKACK sends a pending ACK immediately; the flag is not sticky, hence once per
    read.
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if data:
            with contextlib.suppress(OSError):
                self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        return data


def _open_socket(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        # paramiko writes each SSH packet separately; without NODELAY, Nagle's algorithm
        # holds small packets back waiting for ACKs (delayed ACK, ~40 ms per exchange).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if _TCP_QUICKACK is not None:
            quick = _QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
            quick.settimeout(timeout)
            return quick
    except OSError:
        sock.close()
        raise
    return sock


def _start_transport(
    host: str, port: int, timeout: float, key_types: Sequence[str] | None
) -> paramiko.Transport:
    """Open TCP, run the SSH key exchange (no authentication) and return the transport."""
    sock = _open_socket(host, port, timeout)
    try:
        transport = paramiko.Transport(sock)
    except BaseException:
        sock.close()
        raise
    try:
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        transport.auth_timeout = timeout
        if key_types:
            options = transport.get_security_options()
            supported = set(options.key_types)
            wanted = tuple(k for k in key_types if k in supported)
            if not wanted:
                raise PermanentConnectorError(
                    f"no supported host key algorithm for pinned key types {list(key_types)}",
                    host=host,
                )
            options.key_types = wanted
        transport.start_client(timeout=timeout)
        if transport.host_key is None:
            # start_client returns quietly when its timeout passes mid-negotiation (a node
            # that accepts TCP but never sends its banner): that is a timeout, say so.
            raise TimeoutError(
                f"SSH handshake timed out after {timeout:g} s (no banner or key exchange)"
            )
    except paramiko.SSHException as exc:
        transport.close()
        if isinstance(exc.__context__, TimeoutError):
            # The banner did not come within banner_timeout: a timeout, not a protocol error.
            raise TimeoutError(f"no SSH banner within {timeout:g} s") from exc
        raise
    except BaseException:
        transport.close()
        raise
    return transport


def fetch_host_key(
    host: str,
    port: int = 22,
    timeout: float = 10.0,
    *,
    key_types: Sequence[str] | None = None,
) -> str:
    """Return the host key a server presents, as ``"type base64"``, without logging in.

    For enrolment: show the fingerprint to an operator (or compare it with one read off
    the node's console) before pinning it. ``key_types`` limits which host key
    algorithms are offered (e.g. ``["ecdsa-sha2-nistp256"]``); by default paramiko's
    preference order applies (Ed25519 first).
    """
    try:
        transport = _start_transport(host, port, timeout, key_types)
    except Exception as exc:
        raise _translate_network_error(exc, host, "cannot fetch host key from") from exc
    try:
        return _key_line(transport.get_remote_server_key())
    finally:
        transport.close()


class SSHConnector(Connector):
    """Connector over one reusable SSH connection. Not thread-safe.

    ``known_host_keys`` are the node's pinned host keys (``"type base64 [comment]"``).
    ``retries`` is how many extra connection attempts follow a transient failure, with
    ``backoff * 2**n`` seconds (plus up to 10 % jitter) between them. ``command_timeout``
    is the default per-command limit (``None``: no limit).

    With ``accept_any_host_key_and_report=True`` any host key is accepted and recorded
    in :attr:`presented_host_keys`; use it only for first contact, and let a human check
    the fingerprint before the key is pinned.
    """

    def __init__(
        self,
        host: str,
        port: int = 22,
        username: str = "root",
        pkey: paramiko.PKey | None = None,
        known_host_keys: Sequence[str] = (),
        connect_timeout: float = 10.0,
        command_timeout: float | None = 300.0,
        retries: int = 3,
        backoff: float = 0.5,
        *,
        accept_any_host_key_and_report: bool = False,
    ) -> None:
        if pkey is None:
            raise ValueError("pkey (the controller's private key) is required")
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        self.host = host
        self.port = port
        self.username = username
        self.pkey = pkey
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.retries = retries
        self.backoff = backoff
        self.accept_any_host_key_and_report = accept_any_host_key_and_report
        # Parsed once so a malformed pin fails at construction, not mid-deployment.
        try:
            self._pinned: list[paramiko.PKey] = [load_public_key(k) for k in known_host_keys]
        except InvalidKeyError as exc:
            raise ValueError(f"invalid pinned host key for {host}: {exc}") from exc
        #: Host keys seen while connecting, ``"type base64"``, oldest first.
        self.presented_host_keys: list[str] = []
        #: How many SSH connections this connector has opened (reuse makes this 1).
        self.connections_opened = 0
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # ------------------------------------------------------------------ connection

    @property
    def is_connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def _pinned_key_types(self) -> list[str]:
        types: list[str] = []
        for key in self._pinned:
            for alg in _HOST_KEY_ALGORITHMS.get(key.get_name(), (key.get_name(),)):
                if alg not in types:
                    types.append(alg)
        return types

    def _verify_host_key(self, presented: paramiko.PKey) -> None:
        line = _key_line(presented)
        self.presented_host_keys.append(line)
        if self.accept_any_host_key_and_report:
            return
        if not self._pinned:
            raise UnknownHostKey(
                f"no host key pinned for {self.host}:{self.port}; it presented "
                f"{fingerprint_sha256(presented)}",
                host=self.host,
                presented=fingerprint_sha256(presented),
                presented_key=line,
            )
        blob = presented.asbytes()
        if any(blob == pinned.asbytes() for pinned in self._pinned):
            return
        raise HostKeyMismatch(
            f"HOST KEY MISMATCH for {self.host}:{self.port}: presented "
            f"{fingerprint_sha256(presented)}, expected one of "
            f"{[fingerprint_sha256(k) for k in self._pinned]}",
            host=self.host,
            expected=[fingerprint_sha256(k) for k in self._pinned],
            presented=fingerprint_sha256(presented),
            presented_key=line,
        )

    def _connect_once(self) -> paramiko.Transport:
        # With nothing pinned, negotiate anything: the key is refused (or reported) below.
        key_types = None if self.accept_any_host_key_and_report else self._pinned_key_types()
        try:
            transport = _start_transport(self.host, self.port, self.connect_timeout, key_types)
        except IncompatiblePeer as exc:
            if key_types:
                # The server has no host key of any pinned type: the key was replaced.
                raise HostKeyMismatch(
                    f"HOST KEY MISMATCH for {self.host}:{self.port}: server offers no host "
                    f"key of the pinned type(s) {key_types}",
                    host=self.host,
                    expected=[fingerprint_sha256(k) for k in self._pinned],
                ) from exc
            raise
        try:
            # Checked before authenticating so the controller never proves its identity
            # (or leaks which key it holds) to an impostor.
            self._verify_host_key(transport.get_remote_server_key())
            transport.auth_publickey(self.username, self.pkey)
            if not transport.is_authenticated():
                raise AuthenticationFailed(
                    f"{self.host} requires further authentication after the public key",
                    host=self.host,
                )
        except BaseException:
            transport.close()
            raise
        return transport

    def connect(self) -> None:
        """Open the connection, retrying transient failures with exponential backoff."""
        if self.is_connected:
            return
        self._drop_connection()
        attempt = 0
        while True:
            attempt += 1
            try:
                self._transport = self._connect_once()
                self.connections_opened += 1
                return
            except Exception as exc:
                error = _translate_network_error(exc, self.host, "cannot connect to")
                if not isinstance(error, TransientConnectorError) or attempt > self.retries:
                    if isinstance(error, TransientConnectorError):
                        error.attempts = attempt
                    if error is exc:
                        raise
                    raise error from exc
            # Jitter spreads out reconnects when many nodes fail at once (e.g. a switch).
            delay = self.backoff * (2 ** (attempt - 1))
            time.sleep(delay * (1 + random.uniform(0, 0.1)))  # noqa: S311 - not crypto

    def _drop_connection(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):  # the connection is being discarded anyway
                self._sftp.close()
            self._sftp = None
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
            self._transport = None

    def close(self) -> None:
        self._drop_connection()

    def _open_channel(self) -> paramiko.Channel:
        """Open a session channel, reconnecting once if the cached connection is dead.

        Reconnecting here is safe because nothing has been executed yet.
        """
        self.connect()
        assert self._transport is not None
        try:
            return self._transport.open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError):
            if self._transport is not None and self._transport.is_active():
                # The connection is fine but the server refused a channel (MaxSessions).
                raise
            self._drop_connection()
        self.connect()
        assert self._transport is not None
        try:
            return self._transport.open_session(timeout=self.connect_timeout)
        except Exception as exc:
            raise _translate_network_error(exc, self.host, "cannot open a session on") from exc

    # ------------------------------------------------------------------ commands

    def run(
        self,
        argv: list[str],
        *,
        timeout: float | None = None,
        input: bytes | None = None,
        sudo: bool = False,
    ) -> CommandResult:
        """Run ``argv`` (see :meth:`Connector.run`).

        With a time limit the command runs under coreutils ``timeout``, so ``argv[0]``
        must be a program, not a shell builtin. The node itself enforces the limit:
        SIGTERM to the command's whole process group, SIGKILL after a grace period.
        OpenSSH refuses SSH "signal" requests for root sessions (no privilege separation
        after a root login), and closing the channel alone leaves e.g. ``sleep`` running.
        """
        args = validate_argv(argv)
        if input is not None and not isinstance(input, bytes | bytearray | memoryview):
            raise InvalidCommand("input must be bytes")
        limit = timeout if timeout is not None else self.command_timeout
        if limit is not None:
            if limit <= 0:
                raise InvalidCommand("timeout must be positive")
            args = ["timeout", "-k", f"{_KILL_GRACE:g}", f"{limit:.3f}", *args]
        # Root needs no sudo, and minimal nodes may not have it installed. sudo goes
        # outside timeout so the timeout process has the rights to kill the command.
        command = build_command(args, sudo=sudo and self.username != "root")
        if input is None:
            # A command that reads stdin sees EOF at once. Not by sending a channel EOF:
            # paramiko sends that message after releasing the channel lock, so a command
            # that exits at once can have its CLOSE answered first, and OpenSSH drops the
            # whole connection on an EOF for a channel it has freed ("ieof packet referred
            # to nonexistent channel"), failing every command sharing it.
            command += " </dev/null"
        started = time.monotonic()
        # Backstop for a node that stops answering altogether.
        deadline = None if limit is None else started + limit + _KILL_GRACE + 5.0

        try:
            channel = self._open_channel()
        except ConnectorError:
            raise
        except Exception as exc:
            raise _translate_network_error(exc, self.host, "cannot open a session on") from exc

        stdout: list[bytes] = []
        stderr: list[bytes] = []

        def timed_out(detail: str) -> CommandTimeout:
            return CommandTimeout(
                f"command timed out after {limit}s on {self.host} ({detail}): "
                f"{build_command(argv)[:200]}",
                host=self.host,
                argv=argv,
                timeout=limit,
                stdout=b"".join(stdout).decode("utf-8", "replace"),
                stderr=b"".join(stderr).decode("utf-8", "replace"),
            )

        try:
            try:
                channel.exec_command(command)
            except Exception as exc:
                raise _translate_network_error(
                    exc, self.host, "exec request failed (the command may have started) on"
                ) from exc
            pending = memoryview(bytes(input)) if input is not None else None
            # poll(), not select(): a worker holding hundreds of connections (the metric
            # sweep keeps them) has descriptors above select()'s limit of 1024.
            poller = select.poll()
            poller.register(channel.fileno(), select.POLLIN)
            while True:
                while channel.recv_ready():
                    stdout.append(channel.recv(_READ_CHUNK))
                while channel.recv_stderr_ready():
                    stderr.append(channel.recv_stderr(_READ_CHUNK))
                if pending is not None and not channel.closed:
                    pending = self._feed_stdin(channel, pending)
                if (channel.eof_received or channel.closed) and not (
                    channel.recv_ready() or channel.recv_stderr_ready()
                ):
                    break
                if self._transport is None or not self._transport.is_active():
                    raise TransientConnectorError(
                        f"connection to {self.host} lost while running a command (it may have run)",
                        host=self.host,
                    )
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise timed_out("no answer from the node")
                # While stdin is pending we poll for window space, else sleep until data.
                wait = 0.05 if pending is not None else 1.0
                if deadline is not None:
                    wait = min(wait, max(deadline - now, 0.0))
                poller.poll(wait * 1000)
            # Exit status may trail EOF by a packet; bound the wait by the deadline.
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not channel.status_event.wait(remaining):
                raise timed_out("no exit status")
            exit_code = channel.recv_exit_status()
            if exit_code == -1 and (self._transport is None or not self._transport.is_active()):
                # Closed by the connection dropping, not by the command ending.
                raise TransientConnectorError(
                    f"connection to {self.host} lost while running a command (it may have run)",
                    host=self.host,
                )
            # Otherwise -1 means the process died from a signal (sshd sends "exit-signal",
            # which paramiko does not decode).
            duration = time.monotonic() - started
            # timeout(1) exits 124 (TERM sufficed) or 137 (needed KILL). A command that
            # exits 124 by itself does so before the limit, hence the duration check.
            if limit is not None and exit_code in (124, 137) and duration >= limit:
                raise timed_out("killed on the node")
        finally:
            with contextlib.suppress(Exception):  # best effort; the result is already known
                channel.close()

        return CommandResult(
            argv=list(argv),
            exit_code=exit_code,
            stdout=b"".join(stdout).decode("utf-8", "replace"),
            stderr=b"".join(stderr).decode("utf-8", "replace"),
            duration=duration,
            host=self.host,
        )

    @staticmethod
    def _feed_stdin(channel: paramiko.Channel, pending: memoryview) -> memoryview | None:
        """Send as much stdin as the window allows without blocking; None when done.

        Interleaved with reading output so a command that writes a lot before reading
        all its input cannot deadlock against us.
        """
        if channel.eof_received or channel.exit_status_ready():
            # The command is done: anything more could cross our CLOSE (see run()).
            return None
        try:
            while pending and channel.send_ready():
                sent = channel.send(pending[:32768])
                if sent <= 0:
                    break
                pending = pending[sent:]
            if not pending:
                channel.shutdown_write()
                return None
            return pending
        except OSError:
            # The command closed its stdin (or exited); the rest is not wanted.
            return None

    # ------------------------------------------------------------------ files

    def _sftp_client(self) -> paramiko.SFTPClient:
        self.connect()
        if self._sftp is None:
            assert self._transport is not None
            try:
                self._sftp = paramiko.SFTPClient.from_transport(self._transport)
            except Exception as exc:
                raise _translate_network_error(exc, self.host, "cannot start SFTP on") from exc
            if self._sftp is None:
                raise TransientConnectorError(f"cannot start SFTP on {self.host}", host=self.host)
        return self._sftp

    def _file_error(self, exc: BaseException, what: str, path: str) -> ConnectorError:
        if isinstance(exc, ConnectorError):
            return exc
        if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            return PermanentConnectorError(f"{what} {path} on {self.host}: {exc}", host=self.host)
        if (
            isinstance(exc, OSError)
            and exc.errno is not None
            and exc.errno not in _TRANSIENT_ERRNOS
        ):
            # Other SFTP status codes (failure, bad message): a server-side problem with
            # this path, not the network.
            return PermanentConnectorError(f"{what} {path} on {self.host}: {exc}", host=self.host)
        # Connection-level trouble: the SFTP client is no longer trustworthy.
        self._drop_connection()
        return _translate_network_error(exc, self.host, f"{what} {path} on")

    def put_file(
        self,
        remote_path: str,
        data: bytes,
        *,
        mode: int | None = None,
        owner: str | None = None,
        group: str | None = None,
    ) -> None:
        """Atomically replace ``remote_path`` (see :meth:`Connector.put_file`).

        SFTP runs as the login user, so writing system files needs a root login. A new
        file gets mode 0644 unless ``mode`` is given; pass ``mode`` for anything secret.
        """
        if not remote_path.startswith("/") or "\0" in remote_path:
            raise InvalidCommand(f"remote path must be absolute: {remote_path!r}")
        for name in (owner, group):
            if name is not None and (not name or ":" in name or "\0" in name):
                raise InvalidCommand(f"invalid owner/group name {name!r}")
        directory, base = posixpath.split(remote_path)
        if not base:
            raise InvalidCommand(f"remote path names a directory: {remote_path!r}")
        # Same directory as the target so the rename stays on one filesystem (atomic).
        temp_path = posixpath.join(directory, f".{base}.ums-tmp-{secrets.token_hex(6)}")
        sftp = self._sftp_client()

        try:
            existing: paramiko.SFTPAttributes | None = sftp.stat(remote_path)
        except FileNotFoundError:
            existing = None
        except Exception as exc:
            raise self._file_error(exc, "cannot stat", remote_path) from exc
        if existing is not None and stat.S_ISDIR(existing.st_mode or 0):
            raise PermanentConnectorError(
                f"{remote_path} on {self.host} is a directory", host=self.host
            )

        created = False
        try:
            # "x" (O_EXCL): fail rather than follow a planted symlink or reuse a file.
            with sftp.open(temp_path, "wbx") as handle:
                created = True
                # Private until fully written and given its final mode: the payload may
                # be a key or a password map.
                handle.chmod(0o600)
                handle.set_pipelined(True)
                handle.write(bytes(data))
            if owner is not None or group is not None:
                # "user:" would mean the user's login group, so build each form exactly.
                if owner is not None and group is not None:
                    spec = f"{owner}:{group}"
                else:
                    spec = owner if owner is not None else f":{group}"
                self.run(["chown", "--", spec, temp_path]).check()
            elif existing is not None and existing.st_uid is not None:
                current = sftp.stat(temp_path)
                if (current.st_uid, current.st_gid) != (existing.st_uid, existing.st_gid):
                    gid = existing.st_gid if existing.st_gid is not None else current.st_gid
                    sftp.chown(temp_path, existing.st_uid, gid)
            if mode is not None:
                final_mode = mode
            elif existing is not None and existing.st_mode is not None:
                final_mode = stat.S_IMODE(existing.st_mode)
            else:
                final_mode = 0o644
            # After chown, which clears set-id bits.
            sftp.chmod(temp_path, final_mode)
            sftp.posix_rename(temp_path, remote_path)
        except BaseException as exc:
            if created:
                with contextlib.suppress(Exception):  # the original error matters more
                    sftp.remove(temp_path)
            if isinstance(exc, Exception):
                raise self._file_error(exc, "cannot write", remote_path) from exc
            raise

    def get_file(self, remote_path: str) -> bytes | None:
        sftp = self._sftp_client()
        try:
            with sftp.open(remote_path, "rb") as handle:
                # Prefetch pipelines the read requests; without it each 32 KiB block
                # costs a round trip.
                handle.prefetch()
                return handle.read()
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._file_error(exc, "cannot read", remote_path) from exc
