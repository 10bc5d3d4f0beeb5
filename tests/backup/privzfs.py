"""A zfs-fuse daemon of one's own, in a private mount namespace, for restore tests and the
restore benchmark.

zfs-fuse allows one daemon per machine because its socket, lock and cache folders are
fixed paths; the shared pool fixture (tests/services/zfs) reuses whichever daemon
answers, so a parallel run that owns it can stop it mid-test. Here those folders are
private tmpfs mounts of a new mount namespace, like the IMAP nodes of tests/converge:
the daemon, its pool and its mounts are seen only through :class:`NsConnector` (commands
run with ``nsenter``) and :meth:`PrivateZfs.path` (``/proc/<pid>/root``, the daemon's
view of the file system). Nothing here is product code.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.services.localconn import LocalConnector

PRIVATE = ("/var/run/zfs", "/var/lock/zfs", "/var/lib/zfs")


@dataclass
class PrivateZfs:
    pid: int
    pool: str

    def path(self, path: str | Path) -> Path:
        """``path`` as the daemon's namespace sees it (its mounts included)."""
        return Path(f"/proc/{self.pid}/root{path}")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", *argv],
            capture_output=True,
            text=True,
            check=check,
        )


class NsConnector(LocalConnector):
    """The local connector, each command run in the private daemon's mount namespace."""

    def __init__(self, zfs: PrivateZfs) -> None:
        super().__init__()
        self.zfs = zfs

    def run(self, argv: list[str], **kwargs):  # type: ignore[override]
        return super().run(["nsenter", "-t", str(self.zfs.pid), "-m", *argv], **kwargs)


@contextlib.contextmanager
def private_zfs(workdir: Path, size: str = "256M") -> Iterator[PrivateZfs]:
    setup = "; ".join(f"mkdir -p {d} && mount -t tmpfs ums-test {d}" for d in PRIVATE)
    proc = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"{setup} && exec zfs-fuse --no-daemon --no-kstat-mount",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pool = f"umsr{secrets.token_hex(3)}"
    zfs = PrivateZfs(proc.pid, pool)
    try:
        deadline = time.monotonic() + 60
        while zfs.run("zpool", "list", check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("private zfs-fuse did not start")
            time.sleep(0.2)
        image = workdir / f"{pool}.img"
        subprocess.run(["truncate", "-s", size, str(image)], check=True)
        zfs.run("zpool", "create", "-m", f"/var/lib/zfs/{pool}", pool, str(image))
        yield zfs
    finally:
        zfs.run("zpool", "destroy", "-f", pool, check=False)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
