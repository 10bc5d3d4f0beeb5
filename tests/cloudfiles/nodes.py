"""A cloud files test node running the Nextcloud STAND-IN (tests/standins/nextcloud).

Nextcloud cannot be installed on the test machines, so the node gets the stand-in's
``occ`` (in root's PATH over SSH, as ``occ``) and its OCS API served inside the node's
network namespace. Everything else is real: the namespaced sshd node, the controller's
SSH connector, converge, the jobs and the HTTP client.
"""

from __future__ import annotations

import json
import random
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness.sshnodes import TestNode

STANDIN = Path(__file__).resolve().parents[1] / "standins" / "nextcloud" / "standin.py"
STATE_DIR = "/var/lib/nextcloud-standin"
LAUNCHER = "/usr/local/sbin/nextcloud-occ"
#: The system Python (the stand-in needs only the standard library; the venv's own
#: interpreter may live under /root, which is private inside test nodes).
PYTHON = "/usr/bin/python3"


@dataclass
class Nextcloud:
    tnode: TestNode
    port: int
    server: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://{self.tnode.address}:{self.port}"

    def state(self) -> dict:
        path = self.tnode.path(f"{STATE_DIR}/state.json")
        return json.loads(path.read_text()) if path.exists() else {}

    def occ(self, *args: str) -> str:
        return self.tnode.exec_in_node(["occ", *args]).stdout


def install(tnode: TestNode) -> None:
    """``nextcloud-occ`` (the stand-in) and ``occ`` calling it, in /usr/local/sbin."""
    for name, body in (
        (LAUNCHER, f'#!/bin/sh\nexec {PYTHON} {STANDIN} occ "$@"\n'),
        ("/usr/local/sbin/occ", f'#!/bin/sh\nexec {LAUNCHER} "$@"\n'),
    ):
        path = tnode.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def serve(tnode: TestNode) -> Iterator[Nextcloud]:
    """The stand-in's OCS API on the node's address; stopped when the generator closes."""
    port = random.randint(20000, 60000)  # the node's own network namespace: nothing else binds
    argv = tnode._wrap([PYTHON, str(STANDIN), "serve", tnode.address, str(port)])
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((tnode.address, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(
                        "the Nextcloud stand-in did not start: "
                        + (server.stderr.read().decode() if server.poll() is not None else "")
                    ) from None
                time.sleep(0.1)
        yield Nextcloud(tnode, port, server)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
