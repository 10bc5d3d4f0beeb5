"""Reading a Maildir tar off an IMAP node as a stream: the tar command, the folder it
reads (live, or a snapshot), and the SSH channel it comes through.

The connector's ``run`` collects all output in memory, which a mailbox of gigabytes
must never do; :func:`stream_command` yields the remote command's stdout as it arrives
(SSH flow control holds ``tar`` back while the consumer is slow) and checks the exit
status at the end.

A snapshot is read through ``<domain folder>/.zfs/snapshot/<name>`` where the pool
offers it (OpenZFS); zfs-fuse has no such folder, so there the snapshot is cloned
read-only to ``<pool>/ums-export-<id>`` (mounted at ``/var/lib/ums-exports/<id>``) for
the length of the export and destroyed after.
A clone a dead worker left behind is reused by the next run and destroyed by it (and
``zfs destroy -R`` of the snapshot in a purge takes it too).
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator

from deploy.connector.base import Connector, TransientConnectorError, build_command
from deploy.services.postfix import safe

from . import snapshots

_READ = 1024 * 1024
#: GNU tar exits 1 when a file changed or vanished while read: on a live Maildir that is
#: Courier moving a message from new/ to cur/, not a broken archive.
TAR_OK = (0, 1)


class StreamError(Exception):
    """The remote command failed; the message carries its exit code and stderr."""


def tar_argv(base: str, members: list[str]) -> list[str]:
    """``tar`` of ``members`` (relative to ``base``) to stdout, names as stored."""
    return [
        "tar",
        "-C",
        base,
        "--numeric-owner",
        # A tiered message is a link to its copy on the tier (backup/tiering.py): the
        # export carries the message, not the link. Only root makes links in a Maildir.
        "--dereference",
        "--ignore-failed-read",
        "--warning=no-file-changed",
        "--warning=no-file-removed",
        "--exclude=./.zfs",
        # Excluded folders live in the domain's ``.ums-excluded`` dataset (backup/
        # exclude_layout.py) and are reached through their links: once, not twice.
        "--exclude=./.ums-excluded",
        "-cf",
        "-",
        "--",
        *members,
    ]


def members_for(local_part: str | None) -> list[str]:
    """What the tar holds, relative to the domain folder: ``alice/Maildir`` or ``.``."""
    if not local_part:
        return ["."]
    return [f"{safe.local_part(local_part)}/Maildir"]


def stream_command(
    conn: Connector, argv: list[str], *, ok_codes: tuple[int, ...] = (0,)
) -> Iterator[bytes]:
    """The stdout of ``argv`` on the node, in pieces as they arrive.

    Raises :class:`StreamError` at the end when the exit code is not in ``ok_codes``.
    Closing the generator early closes the channel (the command gets SIGPIPE).
    """
    open_channel = getattr(conn, "_open_channel", None)
    if open_channel is None:  # a connector without channels: no streaming, fail loudly
        raise StreamError("this connector cannot stream command output")
    channel = open_channel()
    stderr = bytearray()
    try:
        channel.exec_command(build_command(argv) + " </dev/null")
        while True:
            if channel.recv_ready():
                data = channel.recv(_READ)
                if data:
                    yield data
                continue
            if channel.recv_stderr_ready():
                stderr += channel.recv_stderr(65536)
                del stderr[:-4000]  # the tail says what went wrong
                continue
            if channel.eof_received or channel.closed:
                break
            transport = getattr(conn, "_transport", None)
            if transport is not None and not transport.is_active():
                raise TransientConnectorError("connection lost while streaming", host=conn.host)
            select.select([channel.fileno()], [], [], 1.0)
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(65536)
        code = channel.recv_exit_status()
        if code not in ok_codes:
            text = stderr.decode("utf-8", "replace").strip()
            raise StreamError(f"{argv[0]} exited {code}: {text[-1000:]}")
    finally:
        with contextlib.suppress(Exception):
            channel.close()


def _ok(conn: Connector, argv: list[str], what: str) -> None:
    result = conn.run(argv)
    if not result.ok and "exists" not in result.stderr:
        raise StreamError(f"{what}: {(result.stderr or result.stdout).strip()[:1000]}")


def clone_name(dataset: str, export_id: int) -> str:
    return f"{dataset.split('/', 1)[0]}/ums-export-{int(export_id)}"


def clone_mountpoint(export_id: int) -> str:
    return f"/var/lib/ums-exports/{int(export_id)}"


@contextlib.contextmanager
def source_folder(
    conn: Connector,
    *,
    mail_root: str,
    domain: str,
    dataset: str,
    snapshot: str,
    export_id: int,
) -> Iterator[str]:
    """The domain folder to tar: live, or the snapshot ``snapshot`` of ``dataset``."""
    live = f"{mail_root.rstrip('/')}/{safe.domain(domain)}"
    if not snapshot:
        yield live
        return
    if snapshots.tier_of(snapshot) is None:
        raise StreamError(f"not one of our snapshots: {snapshot!r}")
    folder = f"{live}/.zfs/snapshot/{snapshot}"
    if conn.run(["test", "-d", folder]).ok:
        yield folder
        return
    clone, mountpoint = clone_name(dataset, export_id), clone_mountpoint(export_id)
    _ok(
        conn,
        [
            "zfs",
            "clone",
            "-o",
            "readonly=on",
            "-o",
            f"mountpoint={mountpoint}",
            f"{dataset}@{snapshot}",
            clone,
        ],
        "zfs clone",
    )
    conn.run(["zfs", "mount", clone])  # already mounted on most systems: not an error
    try:
        yield mountpoint
    finally:
        destroy_clone(conn, dataset, export_id)


def destroy_clone(conn: Connector, dataset: str, export_id: int) -> None:
    """Destroy the export's clone; retried a while, as a just-closed mount can be busy."""
    clone = clone_name(dataset, export_id)
    for attempt in range(20):
        result = conn.run(["zfs", "destroy", "-f", clone])
        if result.ok or "does not exist" in result.stderr:
            break
        if "busy" not in result.stderr or attempt == 19:
            raise StreamError(f"zfs destroy of the export clone: {result.stderr.strip()[:1000]}")
        conn.run(["zfs", "unmount", "-f", clone])
        time.sleep(0.5)
    conn.run(["rmdir", clone_mountpoint(export_id)])
