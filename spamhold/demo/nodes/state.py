"""What a running demo cluster leaves in ``var/demo-nodes/`` for ``down`` (and a later ``up``).

``cluster/`` is the harness's work folder (node host keys and private files: kept across
runs so the same nodes come back with the same identity and their mail); ``state.json``
names the keeper process, the slot and each node's namespace and sshd; ``keeper.log`` is
the keeper's output.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings

KEEPER_MODULE = "spamhold.demo.nodes.keeper"
# Paths the harness makes private per node: its work folder must not be under one.
_PRIVATE_ROOTS = ("/root", "/etc/postfix", "/etc/courier", "/etc/ssh", "/var/mail", "/run")


def workdir() -> Path:
    base = Path(settings.VAR_DIR).resolve() / "demo-nodes"
    if any(base == Path(p) or Path(p) in base.parents for p in _PRIVATE_ROOTS):
        # A checkout under /root: the nodes' private /root would hide their own files.
        base = Path("/var/lib/ums-demo-nodes")
    return base


# Each takes the work folder explicitly where the keeper (another process) calls it.


def state_path(base: Path | None = None) -> Path:
    return (base or workdir()) / "state.json"


def error_path(base: Path | None = None) -> Path:
    return (base or workdir()) / "keeper-error.txt"


def log_path(base: Path | None = None) -> Path:
    return (base or workdir()) / "keeper.log"


def read() -> dict[str, Any] | None:
    try:
        return json.loads(state_path().read_text())
    except (OSError, ValueError):
        return None


def write(data: dict[str, Any], base: Path | None = None) -> None:
    path = state_path(base)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def forget(base: Path | None = None) -> None:
    with contextlib.suppress(OSError):
        state_path(base).unlink()


def is_keeper(pid: int) -> bool:
    """Whether ``pid`` is a live keeper process (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return KEEPER_MODULE.encode() in cmdline and status != "Z"
