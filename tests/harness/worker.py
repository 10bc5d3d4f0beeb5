"""Real Celery worker and beat processes for fault tests: start, SIGKILL, restart.

The fault tests of the orchestration (issue 12) need what production has: a separate
worker process with a prefork pool on the Redis broker, and beat sending the reconciler
every few seconds. This module starts them as subprocesses against the test database,
and kills them the ways production processes die:

* :meth:`CeleryProcess.kill` SIGKILLs the whole process group (the main process and its
  pool children), as a lost machine or ``kill -9`` of the service would;
* :meth:`CeleryWorker.kill_pool` SIGKILLs only the pool children, as the OOM killer does;
* :meth:`CeleryProcess.restart` starts the same command again, as systemd's
  ``Restart=always`` would.

Tests then assert the end state after the system healed *by itself* (no manual converge,
no Redis key deleted by hand).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0


def worker_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker that shares the running test's database and broker."""
    from django.conf import settings
    from django.db import connection

    db = connection.settings_dict
    user = db.get("USER") or "root"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or "5432"
    broker = settings.CELERY_BROKER_URL
    if not broker:
        raise RuntimeError("set CELERY_BROKER_URL (make test does)")
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{user}@{host}:{port}/{db['NAME']}",
        "CELERY_BROKER_URL": broker,
        "UMS_TASKS_IN_PROCESS": "false",
        "UMS_RECONCILE_INTERVAL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    if settings.CACHES["default"].get("LOCATION"):
        env["REDIS_URL"] = settings.CACHES["default"]["LOCATION"]
    env.update(extra or {})
    return env


def _die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class CeleryProcess:
    """One Celery command (worker or beat) run in its own process group."""

    ready_marker = ""

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        log_path: Path,
        *,
        host: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = env
        self.log_path = log_path
        #: Run in a UTS namespace with this host name (needs root): a worker "on another
        #: machine", whose processes this host cannot see by pid.
        self.host = host
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "celery", "-A", "ums", *self.argv]
        if self.host is None:
            return argv
        # The host name arrives as "$1", never spliced into the script.
        script = 'hostname "$1"; shift; exec "$@"'
        return ["unshare", "--uts", "sh", "-c", script, "sh", self.host, *argv]

    def start(self, *, wait: bool = True) -> None:
        self.starts += 1
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so kill() takes the pool
                # A pytest run that is itself killed must not leave a worker consuming the
                # next run's jobs from the same test database and broker.
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"celery exited ({self.proc.returncode}):\n{self.log_tail()}")
            if self.ready_marker in self._new_log():
                return
            time.sleep(0.1)
        raise RuntimeError(f"celery not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def _new_log(self) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as handle:
            handle.seek(self._log_offset)
            return handle.read().decode(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: nothing gets to clean up.

        Repeated until the group is empty: a pool child the main process was forking at
        that instant can miss the first signal and live on, orphaned.
        """
        if self.proc is None:
            return
        deadline = time.monotonic() + 30
        while True:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            if not _group_members(self.proc.pid) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """A polite stop (SIGTERM, then SIGKILL after a grace period)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass

    def restart(self) -> None:
        self.kill()
        self.start()


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, pgrp.
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class CeleryWorker(CeleryProcess):
    ready_marker = " ready."

    def pool_pids(self) -> list[int]:
        """PIDs of the prefork pool children of the main worker process."""
        if self.proc is None:
            return []
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            return []

    def kill_pool(self) -> list[int]:
        """SIGKILL only the pool children, as the OOM killer would; the main process lives
        on and forks new children."""
        killed = []
        for pid in self.pool_pids():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        return killed


class CeleryBeat(CeleryProcess):
    ready_marker = "beat: Starting"


def make_worker(
    tmp_path: Path,
    environment: dict[str, str],
    *,
    concurrency: int = 2,
    name: str = "worker",
    host: str | None = None,
) -> CeleryWorker:
    """A worker process (not started) logging to ``tmp_path/<name>.log``; with ``host``
    it runs under that host name (see :attr:`CeleryProcess.host`)."""
    return CeleryWorker(
        [
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"{name}-{os.getpid()}@%h",
        ],
        environment,
        tmp_path / f"{name}.log",
        host=host,
    )


@contextmanager
def celery_stack(
    tmp_path: Path,
    *,
    concurrency: int = 2,
    beat: bool = True,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[CeleryWorker, CeleryBeat | None]]:
    """A real worker (prefork pool) and, with ``beat``, a beat process sending the
    reconciler every 2 s; both stopped at the end whatever happened.

    The test process must stop running tasks eagerly while the stack runs, so jobs it
    enqueues go to the broker: this context switches ``task_always_eager`` off and back.
    """
    from ums.celery import app

    environment = worker_environment(env)
    worker = make_worker(tmp_path, environment, concurrency=concurrency)
    beat_proc = (
        CeleryBeat(
            ["beat", "--loglevel", "INFO", "--schedule", str(tmp_path / "beat-schedule")],
            environment,
            tmp_path / "beat.log",
        )
        if beat
        else None
    )
    app.conf.task_always_eager = False
    try:
        # Messages an earlier, interrupted run left on the broker would run against this
        # test's database.
        app.control.purge()
        worker.start()
        if beat_proc is not None:
            beat_proc.start()
        yield worker, beat_proc
    finally:
        app.conf.task_always_eager = True
        for proc in (beat_proc, worker):
            if proc is not None:
                proc.stop()


def wait_for(predicate, *, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after
    ``timeout`` seconds. Returns the truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def zfs_fault_env(settings: object, stale: int, **extra: str) -> dict[str, str]:
    """The environment of a fault test's worker on nodes with a ZFS mail store: the same
    node settings and short periods as the test process (``settings``, pytest-django's
    fixture, gets them too), the reconciler every second. ``extra`` adds variables."""
    import json

    for name in ("UMS_JOB_STALE_SECONDS", "UMS_CONVERGE_LEASE_SECONDS"):
        setattr(settings, name, stale)
    return {
        "UMS_CELERY_IMPORTS": "tests.backup.fault_worker_setup",
        "UMS_NODE_SETTINGS": json.dumps(settings.UMS_CONVERGE),  # type: ignore[attr-defined]
        "UMS_JOB_STALE_SECONDS": str(stale),
        "UMS_CONVERGE_LEASE_SECONDS": str(stale),
        "UMS_CONVERGE_RETRY_MAX_SECONDS": "10",
        "UMS_RECONCILE_INTERVAL": "1",
        **extra,
    }


def wait_for_job_end(job: Any, *, timeout: float, what: str) -> Any:
    """Poll ``job`` (a Job row, refreshed in place) until it succeeded or failed."""
    from ums.models import Job

    def ended() -> bool:
        job.refresh_from_db()
        return job.status in (Job.SUCCEEDED, Job.FAILED)

    wait_for(ended, timeout=timeout, what=what)
    return job
