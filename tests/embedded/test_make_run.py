"""``make run`` as a new user starts it: the supervisor on the embedded default.

One supervisor (``manage.py serve_embedded``, what the Makefile's ``run`` target runs) is
started per module with no DATABASE_URL, no broker and a fresh UMS_VAR_DIR, so it creates
its own PostgreSQL under that folder. Then: a second start is refused while it runs;
Chromium logs in with the login it printed, creates a domain and a mailbox through the
portal and finds both in the audit log; SIGTERM stops everything, PostgreSQL included.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from ums.embedded.postgres import database_settings

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "embedded"
LOGIN = re.compile(r"^\s+(\S+)\s+(\S+)\s+home customer: (.+)$")
# What a developer's shell may hold that `make run` must do without.
STRIPPED = {"DATABASE_URL", "CELERY_BROKER_URL", "UMS_TASKS_IN_PROCESS", "REDIS_URL"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def embedded_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    env.update(UMS_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1")
    return env


def embedded_dsn(var_dir: Path) -> dict[str, str]:
    db = database_settings(var_dir)
    return {"dbname": db["NAME"], "user": db["USER"], "host": db["HOST"]}


def serve_command(port: int) -> list[str]:
    return [sys.executable, "manage.py", "serve_embedded", "--port", str(port)]


@dataclass
class Running:
    proc: subprocess.Popen
    var_dir: Path
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return "".join(self.lines)

    def logins(self) -> dict[str, str]:
        found = {}
        for line in self.lines:
            match = LOGIN.match(line.rstrip("\n"))
            if match:
                found[match.group(1)] = match.group(2)
        return found

    def postmaster_pid(self) -> int:
        return int((self.var_dir / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])


def _pump(proc: subprocess.Popen, lines: list[str], ready: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Portal and API on "):
            ready.set()
    ready.set()  # exited: let the waiter look


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def make_run() -> Iterator[Running]:
    # Short: the server's socket lives under this folder when the path allows.
    var_dir = Path(tempfile.mkdtemp(prefix="ums-run-"))
    port = free_port()
    proc = subprocess.Popen(
        serve_command(port),
        cwd=ROOT,
        env=embedded_env(var_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Running(proc, var_dir, port)
    ready = threading.Event()
    threading.Thread(target=_pump, args=(proc, running.lines, ready), daemon=True).start()
    ready.wait(timeout=240)
    if proc.poll() is not None or not any(
        line.startswith("Portal and API on ") for line in running.lines
    ):
        proc.kill()
        pytest.fail("make run did not come up:\n" + running.output()[-5000:])
    try:
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["rm", "-rf", str(var_dir)], check=False)


def test_a_second_make_run_while_one_runs_is_refused(make_run: Running) -> None:
    second = subprocess.run(
        serve_command(free_port()),
        cwd=ROOT,
        env=embedded_env(make_run.var_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode != 0
    assert "already running" in second.stdout
    assert str(make_run.proc.pid) in second.stdout
    assert make_run.proc.poll() is None  # the first one is untouched


@pytest.mark.browser
def test_new_user_logs_in_creates_domain_and_mailbox_and_audits_them(
    make_run: Running,
) -> None:
    playwright_sync = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package")
    from tests.portal.test_browser import LAUNCH_ARGS

    logins = make_run.logins()
    assert "admin" in logins, make_run.output()[-3000:]
    base = make_run.url
    expect = playwright_sync.expect
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="en-GB")
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on(
                "response",
                lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 500 else None,
            )
            page.goto(f"{base}/login/")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(logins["admin"])
            page.get_by_role("button", name="Log in").click()
            expect(page).not_to_have_url(re.compile(r"/login/"))

            page.goto(f"{base}/mail/domains/new/")
            # Fields by name: their labels carry a required marker that may change.
            page.locator("input[name=name]").fill("first-run.example")
            page.locator("input[name=contact_email]").fill("hostmaster@first-run.example")
            page.get_by_role("button", name="Create domain").click()
            expect(page.get_by_role("heading", name="first-run.example")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "01-domain.png"), full_page=True)

            page.goto(page.url.rstrip("/") + "/mailboxes/new/")
            page.locator("input[name=local_part]").fill("anna")
            page.locator("input[name=password]").fill("Birch-Canyon-Delta-31")
            confirm = page.locator("input[name=password_confirm]")
            if confirm.count():
                confirm.fill("Birch-Canyon-Delta-31")
            page.get_by_role("button", name="Create mailbox").click()
            expect(page.get_by_text("anna@first-run.example").first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "02-mailbox.png"), full_page=True)

            page.goto(f"{base}/audit/")
            rows = page.locator("tbody tr")
            expect(rows.filter(has_text="anna@first-run.example").first).to_be_visible()
            # The domain's own row (its other rows name addresses: the mailbox, aliases).
            expect(
                rows.filter(has_text="first-run.example").filter(has_not_text="@").first
            ).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "03-audit.png"), full_page=True)
        finally:
            browser.close()
    assert not problems, problems
    # The records behind the page, read from the embedded server itself.
    with psycopg.connect(**embedded_dsn(make_run.var_dir)) as conn:
        actions = dict(
            conn.execute(
                "SELECT object_repr, action FROM audit_auditrecord WHERE channel = 'portal'"
            ).fetchall()
        )
    assert actions.get("first-run.example") == "mail.domain.create"
    assert actions.get("anna@first-run.example") == "mail.mailbox.create"
    # And nothing failed on the server side either.
    assert "Traceback" not in make_run.output(), make_run.output()[-5000:]


def test_sigterm_stops_everything_postgresql_included(make_run: Running) -> None:
    postmaster = make_run.postmaster_pid()
    assert pid_alive(postmaster)
    make_run.proc.send_signal(signal.SIGTERM)
    assert make_run.proc.wait(timeout=90) == 0, make_run.output()[-3000:]
    deadline = time.monotonic() + 10
    while pid_alive(postmaster) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(postmaster), "the embedded PostgreSQL outlived make run"
    assert not (make_run.var_dir / "pgdata" / "postmaster.pid").exists()
    # Nothing answers on the portal's port any more.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", make_run.port), 1):
        pass
    assert "Embedded PostgreSQL stopped." in make_run.output()


def test_after_a_sigkill_the_next_start_stops_the_orphaned_postgresql(make_run: Running) -> None:
    if make_run.proc.poll() is None:  # run alone: the module's supervisor is still up
        make_run.proc.send_signal(signal.SIGTERM)
        make_run.proc.wait(timeout=90)

    def start() -> tuple[subprocess.Popen, list[str]]:
        proc = subprocess.Popen(
            serve_command(make_run.port),
            cwd=ROOT,
            env=embedded_env(make_run.var_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        ready = threading.Event()
        threading.Thread(target=_pump, args=(proc, lines, ready), daemon=True).start()
        assert ready.wait(timeout=240) and proc.poll() is None, "".join(lines)[-3000:]
        return proc, lines

    killed, _lines = start()
    orphan = make_run.postmaster_pid()
    killed.kill()  # SIGKILL: no clean-up runs in the supervisor
    killed.wait(timeout=30)
    # The web server and task runner die with their parent; PostgreSQL is orphaned.
    # gunicorn gets SIGTERM (PR_SET_PDEATHSIG) and shuts down gracefully: its workers keep
    # the listening socket (the kernel still completes connections into its backlog)
    # for up to its 30 s graceful timeout, so allow that plus scheduling on a busy machine.
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", make_run.port), 0.5):
                time.sleep(0.2)
        except OSError:
            break
    else:
        pytest.fail("gunicorn outlived its supervisor")
    assert pid_alive(orphan)

    again, lines = start()
    try:
        assert not pid_alive(orphan)
        assert any("left by a killed run was stopped" in line for line in lines), "".join(lines)
        assert make_run.postmaster_pid() != orphan
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=90) == 0
    assert not (make_run.var_dir / "pgdata" / "postmaster.pid").exists()
