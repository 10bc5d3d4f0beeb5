"""Unmounting a mail dataset that a process may still hold busy.

Used where a node must stop serving a domain's dataset now: a storage stop
(:mod:`deploy.node_storage`), a converge that demotes a former primary to a replica and a
replication fence. ``zfs unmount -f`` is no answer: OpenZFS on Linux does not support
forcing, and zfs-fuse detaches the mount lazily, after which its pool hangs on the next
export or destroy while the old holder lives. What holds a mail dataset busy is an IMAP
session, a delivery or Courier's ``gam_server`` that must not touch it any more, so those
processes get SIGTERM (``fuser -k -TERM -m``, only while the dataset is still mounted
there, so ``-m`` never names the filesystem beneath) and the unmount is tried once more.
"""

from __future__ import annotations

import time

from deploy.connector.base import Connector, ConnectorError

#: Seconds the processes told to stop get before the second unmount.
RELEASE_WAIT_SECONDS = 2.0


class UnmountFailed(RuntimeError):
    """The dataset is still mounted; the message says why and, if known, who holds it."""


def holders(conn: Connector, mountpoint: str) -> str:
    """Who keeps ``mountpoint`` busy (``fuser -vm``), for the reason shown; "" if unknown."""
    try:
        result = conn.run(["fuser", "-vm", mountpoint], timeout=60)
    except ConnectorError:
        raise
    except Exception:  # a diagnostic only (no fuser on the node)
        return ""
    # fuser -v writes its table to stderr, among complaints about processes it cannot read.
    lines = (result.stderr + "\n" + result.stdout).splitlines()
    return "\n".join(x for x in lines if x.strip() and "Cannot stat" not in x)[-1500:]


def _unmount(conn: Connector, name: str) -> str:
    """ "" once ``name`` is not mounted (also when it was not to begin with), else ZFS's error."""
    result = conn.run(["zfs", "unmount", name], timeout=300)
    text = (result.stderr or result.stdout).strip()
    if result.ok or "not currently mounted" in text:
        return ""
    return text or f"exit status {result.exit_code}"


def unmount_releasing(
    conn: Connector, name: str, mountpoint: str, *, wait: float = RELEASE_WAIT_SECONDS
) -> None:
    """Unmount ``name`` (mounted at ``mountpoint``), stopping what holds it busy."""
    error = _unmount(conn, name)
    if not error:
        return
    if "busy" not in error or not mountpoint.startswith("/"):
        raise UnmountFailed(f"zfs unmount {name}: {error}")
    conn.run(["fuser", "-k", "-TERM", "-m", mountpoint], timeout=60)
    time.sleep(wait)
    error = _unmount(conn, name)
    if error:
        busy = holders(conn, mountpoint)
        text = f"zfs unmount {name}: {error}"
        raise UnmountFailed(f"{text}\nin use by:\n{busy}" if busy else text)
