"""A :class:`Connector` that runs commands on this machine, for service checker tests.

Service modules only talk to nodes through the connector interface, so their real
checkers (``nginx -t``, ``spamassassin --lint``, ``clamconf``, ``zfs``) can be driven on
the test machine itself without an SSH hop. The tests marked ``nodes`` cover the SSH
path; this stand-in is test-only and is never used against a real node.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from deploy.connector.base import CommandResult, CommandTimeout, Connector, validate_argv


class LocalConnector(Connector):
    """Runs argument lists with :mod:`subprocess` (no shell) on the local machine."""

    def __init__(self) -> None:
        self.host = "localhost"
        self.commands: list[list[str]] = []  # every argv run, for assertions

    def connect(self) -> None:
        """Nothing to open."""

    def run(
        self,
        argv: list[str],
        *,
        timeout: float | None = None,
        input: bytes | None = None,
        sudo: bool = False,
    ) -> CommandResult:
        args = validate_argv(argv)
        self.commands.append(args)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                args,
                input=input,
                capture_output=True,
                timeout=timeout or 120,
                check=False,
                env={**os.environ, "LC_ALL": "C"},
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeout(f"{args[0]} timed out", argv=args, timeout=timeout) from exc
        return CommandResult(
            argv=args,
            exit_code=proc.returncode,
            stdout=proc.stdout.decode("utf-8", "replace"),
            stderr=proc.stderr.decode("utf-8", "replace"),
            duration=time.monotonic() - started,
            host=self.host,
        )

    def put_file(
        self,
        remote_path: str,
        data: bytes,
        *,
        mode: int | None = None,
        owner: str | None = None,
        group: str | None = None,
    ) -> None:
        target = Path(remote_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, mode if mode is not None else 0o644)
        os.replace(temp, target)

    def get_file(self, remote_path: str) -> bytes | None:
        try:
            return Path(remote_path).read_bytes()
        except FileNotFoundError:
            return None

    def close(self) -> None:
        """Nothing to close."""


def install(files: list, root: Path | None = None) -> None:
    """Write rendered :class:`ManagedFile` objects locally, optionally re-rooted."""
    for managed in files:
        path = Path(managed.path)
        if root is not None:
            path = root / path.relative_to("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(managed.content)
        os.chmod(path, managed.mode)
