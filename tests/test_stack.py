"""The production stack without Docker: the processes docker-compose.yml runs.

gunicorn (web), a Celery worker and Celery beat start as subprocesses with the compose
file's commands, against the suite's PostgreSQL and Redis and a fresh UMS_VAR_DIR (where
beat must be able to write its schedule). Through the API with a real token: a mailbox is
created directly (201 and its audit record), and a CSV import's job runs on the worker,
not in the web process; beat's reconcile ticks reach the worker.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from audit.models import AuditRecord
from mail.models import Mailbox
from tenants import actions
from tenants import permissions as perms
from tests.fixtures import Cast
from tests.mail.helpers import make_domain
from ums.models import Job

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Birch-Canyon-Delta-31"


def compose_commands() -> dict[str, list[str]]:
    """The web, worker and beat commands of docker-compose.yml, as written there."""
    text = (ROOT / "docker-compose.yml").read_text()
    worker = re.search(r"worker:.*?command: (\[.*?\])", text, re.S)
    beat = re.search(r"beat:.*?command: (\[.*?\])", text, re.S)
    assert worker and beat, "docker-compose.yml lost its worker or beat command"
    assert "exec gunicorn ums.wsgi --bind 0.0.0.0:8000" in text
    return {"worker": json.loads(worker.group(1)), "beat": json.loads(beat.group(1))}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict]:
    db = connection.settings_dict
    broker = os.environ.get("CELERY_BROKER_URL", "")
    assert broker.startswith("redis://"), "set CELERY_BROKER_URL (make test does)"
    env = {k: v for k, v in os.environ.items() if k != "UMS_TASKS_IN_PROCESS"}
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        UMS_VAR_DIR=str(tmp_path / "var"),
        # The test process signs and encrypts with these; the stack must agree.
        DJANGO_SECRET_KEY=settings.SECRET_KEY,
        UMS_ENCRYPTION_KEYS=",".join(settings.ENCRYPTION_KEYS),
        UMS_RECONCILE_INTERVAL="1",
        PYTHONUNBUFFERED="1",
    )
    commands = compose_commands()
    port = free_port()
    python = [sys.executable, "-m"]
    argv = {
        "web": [
            *python,
            "gunicorn",
            "ums.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--no-control-socket",
        ],
        # As composed, with a smaller pool for this machine.
        "worker": [*python, *commands["worker"], "--without-gossip", "--without-mingle"],
        "beat": [*python, *commands["beat"]],
    }
    concurrency = argv["worker"].index("--concurrency") + 1
    argv["worker"][concurrency] = "2"
    logs = {name: tmp_path / f"{name}.log" for name in argv}
    procs = {}
    try:
        for name, command in argv.items():
            procs[name] = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=logs[name].open("w"),
                stderr=subprocess.STDOUT,
            )

        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5):
                    return True
            except OSError:
                return False

        wait_for(listening, 60, "gunicorn")
        wait_for(lambda: "ready." in logs["worker"].read_text(), 60, "the Celery worker")
        yield {"url": f"http://127.0.0.1:{port}", "logs": logs, "var": tmp_path / "var"}
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def api(base: str, token: str, method: str, path: str, body: dict | None = None):
    request = urllib.request.Request(  # noqa: S310 (loopback, http only)
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.django_db(transaction=True)
def test_compose_processes_serve_the_api_and_run_jobs_on_the_worker(
    cast: Cast, stack: dict
) -> None:
    domain = make_domain(cast.ministry, "stack.example")
    admin = cast.sub_admin
    admin.permissions = [*admin.permissions, perms.TOKENS_MANAGE]
    admin.save(update_fields=["permissions"])
    _token, secret = actions.create_token(actor=admin, name="stack test")
    base = stack["url"]

    # A mailbox straight through the API.
    status, body = api(
        base,
        secret,
        "POST",
        "/api/v1/mail/mailboxes/",
        {"domain": domain.pk, "localPart": "direct", "password": PASSWORD},
    )
    assert status == 201, body
    assert Mailbox.objects.filter(email="direct@stack.example").exists()
    assert AuditRecord.objects.filter(
        action="mail.mailbox.create", object_repr="direct@stack.example", channel="api"
    ).exists()

    # A mailbox through a job: the response comes back first, the worker runs it.
    csv = (
        "type,address,display_name,password,quota_mb,targets,enabled\n"
        f"mailbox,imported@stack.example,Imported,{PASSWORD},100,,true\n"
    )
    status, body = api(base, secret, "POST", "/api/v1/mail/imports/", {"csv": csv, "dryRun": False})
    assert status == 201, body
    job = Job.objects.get(pk=body["job"])
    wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 60, "the import job")
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    assert Mailbox.objects.filter(email="imported@stack.example").exists()
    # The worker's record, attributed to the administrator who asked.
    applied = AuditRecord.objects.get(action="mail.import.apply")
    assert (applied.channel, applied.actor_id) == ("task", admin.pk)
    worker_log = stack["logs"]["worker"].read_text()
    assert "ums.run_job[" in worker_log and "succeeded" in worker_log, worker_log[-3000:]

    # Beat writes its schedule under UMS_VAR_DIR and its ticks reach the worker.
    assert list(stack["var"].glob("celerybeat-schedule*")), "beat wrote no schedule file"
    wait_for(
        lambda: "ums.reconcile" in stack["logs"]["worker"].read_text(),
        30,
        "a reconcile tick from beat on the worker",
    )
