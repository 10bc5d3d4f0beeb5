"""The supervisor of ``make run``: one command that starts the whole embedded install and
stops all of it when it ends.

Order: take the run lock (a second ``make run`` on the same ``var/`` is refused) -> start
the embedded PostgreSQL (unless ``DATABASE_URL`` is set) -> migrate -> collectstatic ->
seed_demo -> ``demo_nodes up`` (when asked, and when that command exists) -> gunicorn and
the embedded task runner as child processes. Ctrl-C, SIGTERM or SIGHUP, or either child
exiting, stops the children, runs ``demo_nodes down`` if it ran ``up``, and stops
PostgreSQL. Children get SIGTERM from the kernel if the supervisor itself is killed
(``PR_SET_PDEATHSIG``); a PostgreSQL orphaned that way is stopped on the next start.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ums.embedded.postgres import EmbeddedPostgres, EmbeddedPostgresError

# Exit codes: 0 stopped on request; 2 refused to start (already running, port taken);
# 1 something failed.
EXIT_REFUSED = 2
_PR_SET_PDEATHSIG = 1


class Refused(Exception):
    """Starting is refused for a reason the user can fix (said in the message)."""


class _Stop(BaseException):
    """A stop signal arrived while the supervisor was still starting things."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class RunLock:
    """An exclusive lock on ``var/run.lock``, held for the supervisor's whole life.

    The kernel drops it when the process dies, however it dies, so a stale file never
    blocks a new start; the file holds the owner's PID for the refusal message.
    """

    def __init__(self, var_dir: Path) -> None:
        self.path = var_dir / "run.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise Refused(
                f"UMS is already running from {self.path.parent} (supervisor pid {owner}). "
                "Stop it first (Ctrl-C in its terminal), or set UMS_VAR_DIR to another "
                "folder to run a second, separate install."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _wait_listening(host: str, port: int, proc: subprocess.Popen, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Supervisor:
    def __init__(
        self,
        *,
        var_dir: Path,
        base_dir: Path,
        host: str,
        port: int,
        embedded_db: bool,
        demo_nodes: bool = False,
        run_tasks: bool = True,
        web_workers: int = 2,
        out: Callable[[str], None] = print,
    ) -> None:
        self.var_dir = var_dir
        self.base_dir = base_dir
        self.host = host
        self.port = port
        self.embedded_db = embedded_db
        self.demo_nodes = demo_nodes
        self.run_tasks = run_tasks
        self.web_workers = web_workers
        self.out = out
        self.lock = RunLock(var_dir)
        self.postgres: EmbeddedPostgres | None = None
        self.children: dict[str, subprocess.Popen] = {}
        self.nodes_up = False
        self.stopping = False
        self.starting = True

    # --- signals ------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.out(f"Stopping ({signal.Signals(signum).name})...")
        if self.starting:
            raise _Stop

    def _install_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    # --- life cycle ---------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.lock.acquire()
        except Refused as exc:
            self.out(f"Error: {exc}")
            return EXIT_REFUSED
        self._install_signals()
        status = 1
        try:
            status = self._start_and_serve()
        except Refused as exc:
            self.out(f"Error: {exc}")
            status = EXIT_REFUSED
        except _Stop:
            status = 0
        except EmbeddedPostgresError as exc:
            self.out(f"Error: the embedded PostgreSQL failed: {exc}")
        finally:
            self.starting = False
            self.stopping = True
            self._shutdown()
            self.lock.release()
        return status

    def _start_and_serve(self) -> int:
        from django.core.management import call_command, get_commands
        from django.db import connections

        if not _port_free(self.host, self.port):
            raise Refused(
                f"{self.host}:{self.port} is already in use: stop what listens there or "
                "choose another port (make run PORT=8001)."
            )
        if self.embedded_db:
            self.postgres = EmbeddedPostgres(self.var_dir)
            started = time.monotonic()
            what = self.postgres.start()
            self.out(
                f"Embedded PostgreSQL {what} in {time.monotonic() - started:.1f} s "
                f"(data in {self.postgres.pgdata})"
            )
            if self.postgres.opened:
                folders = ", ".join(str(p) for p in self.postgres.opened)
                self.out(f"Note: other users may now traverse (not list) {folders}.")
        call_command("migrate", interactive=False, verbosity=1)
        call_command("collectstatic", interactive=False, verbosity=0)
        call_command("seed_demo")
        if self.demo_nodes:
            if "demo_nodes" in get_commands():
                self.nodes_up = True  # before: a half-done `up` still gets its `down`
                call_command("demo_nodes", "up")
            else:
                self.out("DEMO_NODES=1: this checkout has no demo_nodes command; skipped.")
        connections.close_all()  # the children open their own
        self._spawn_children()
        if not _wait_listening(self.host, self.port, self.children["web"]):
            self.out("Error: the web server did not start (see its output above).")
            return 1
        self.out(f"Portal and API on http://{self.host}:{self.port}/ (API docs: /api/docs/)")
        self.out("Press Ctrl-C to stop.")
        self.starting = False
        return self._watch()

    def _spawn_children(self) -> None:
        env = dict(os.environ)
        common: dict[str, Any] = {
            "cwd": self.base_dir,
            "env": env,
            "start_new_session": True,  # Ctrl-C reaches the supervisor, which stops them
            "preexec_fn": _die_with_parent,
        }
        self.children["web"] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "ums.wsgi",
                "--bind",
                f"{self.host}:{self.port}",
                "--workers",
                str(self.web_workers),
                "--threads",
                "4",
                "--access-logfile",
                "-",
                "--no-control-socket",  # one per $HOME: two installs would clash
            ],
            **common,
        )
        if self.run_tasks:
            self.children["tasks"] = subprocess.Popen(
                [sys.executable, "manage.py", "run_tasks"], **common
            )
        else:
            self.out(
                "CELERY_BROKER_URL is set: run `celery -A ums worker` and `celery -A ums beat`."
            )

    def _watch(self) -> int:
        while not self.stopping:
            for name, proc in self.children.items():
                if proc.poll() is not None:
                    self.out(f"Error: the {name} process exited ({proc.returncode}); stopping.")
                    return 1
            time.sleep(0.2)
        return 0

    def _shutdown(self) -> None:
        # Signals during shutdown only set the flag: nothing interrupts the cleanup.
        for proc in self.children.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.children.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.nodes_up:
            from django.core.management import call_command

            try:
                call_command("demo_nodes", "down")
            except Exception as exc:  # still stop PostgreSQL
                self.out(f"Error: demo_nodes down failed: {exc}")
        if self.postgres is not None:
            from django.db import connections

            connections.close_all()
            try:
                self.postgres.stop()
                self.out("Embedded PostgreSQL stopped.")
            except EmbeddedPostgresError as exc:
                self.out(f"Error: could not stop the embedded PostgreSQL: {exc}")
