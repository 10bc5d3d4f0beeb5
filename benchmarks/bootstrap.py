"""Prepare the benchmark process: a PostgreSQL ``DATABASE_URL``, the database, Django, migrations.

Import nothing from Django or the apps at module level: :func:`setup` must run first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql", "postgis"}


class BenchError(SystemExit):
    """A precondition failed: print the message and exit with status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(f"bench: {message}")


def database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme not in POSTGRES_SCHEMES:
        raise BenchError(
            "DATABASE_URL must point to PostgreSQL (the targets are about PostgreSQL plans); "
            f"got {url or 'nothing'!r}. Run `make bench`, or set "
            "DATABASE_URL=postgres://USER@127.0.0.1:5432/ums_bench."
        )
    return url


def database_name(url: str) -> str:
    name = unquote(urlsplit(url).path.lstrip("/"))
    if not name:
        raise BenchError(f"DATABASE_URL names no database: {url!r}")
    return name


def ensure_database(url: str) -> bool:
    """Create the database if it is missing (connecting to ``postgres``); True if created."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = database_name(url)
    admin_url = parts._replace(scheme="postgresql", path="/postgres").geturl()
    try:
        conn = psycopg.connect(admin_url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise BenchError(f"cannot connect to PostgreSQL at {parts.netloc}: {exc}") from exc
    with conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def setup_django() -> None:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "ums.settings"
    # A web worker keeps its database connection between requests; so does the benchmark,
    # so that a reconnect every minute does not land in the tail figures.
    os.environ.setdefault("UMS_DB_CONN_MAX_AGE", "600")
    import django

    django.setup()


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def prepare(*, allow_any_database: bool) -> str:
    """Check the environment, create and migrate the database; return its name."""
    url = database_url()
    name = database_name(url)
    if "bench" not in name and not allow_any_database:
        raise BenchError(
            f"refusing to seed database {name!r}: seeding truncates the tenant and audit "
            "tables. Use a database whose name contains 'bench' (make bench uses ums_bench) "
            "or pass --allow-any-database."
        )
    created = ensure_database(url)
    setup_django()
    migrate()
    if created:
        print(f"created database {name}")
    return name


def write_figures(benchmark: str, figures: dict, path: Path) -> None:
    """Store a benchmark's figures as JSON (with the machine they ran on) and print them."""
    import json
    import platform

    result = {
        "benchmark": benchmark,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "figures": figures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, figures), default=0) + 2
    for key, value in figures.items():
        print(f"{key:{width}} {value}")
