"""Job log lines in the reader's language: a handler logs message ids with parameters
(``reporter.say``), the portal job page and the job API render them in Russian or
Mongolian, the stored log stays language-neutral, and no job code logs a formatted string
(which no catalog could translate)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext_noop

from tests.fixtures import Cast, token_client
from ums import context, jobs
from ums.joblog import I18N_PREFIX, log_entry, translate_log
from ums.models import Job

ROOT = Path(__file__).resolve().parents[2]
HOST = "smtp1.gov.example"
# Node output embedded in a line: shown as is (escaped), never translated.
NODE_OUTPUT = "connection refused <b>by peer</b>"


@jobs.handler("test.i18n_log")
def i18n_log_handler(job: Job, reporter: jobs.Reporter) -> dict:
    # The msgid spamhold's intents log when a node fails; the catalogs translate it.
    reporter.say(gettext_noop("Node %(node)s: %(error)s"), node=HOST, error=NODE_OUTPUT)
    reporter.say(gettext_noop("reboot requested"))
    return {}


DB = pytest.mark.django_db(transaction=True)  # the job is dispatched after commit


@pytest.fixture
def finished_job(cast: Cast) -> Job:
    with (
        context.acting(channel=context.CHANNEL_API, actor=cast.sub_admin),
        transaction.atomic(),
    ):
        job = jobs.enqueue(
            "test.i18n_log", actor=cast.sub_admin, title="Log test", customer=cast.ministry
        )
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, (job.error, job.log)
    return job


EXPECTED = {
    "en": f"Node {HOST}: {NODE_OUTPUT}",
    "ru": f"Узел {HOST}: {NODE_OUTPUT}",
    "mn": f"Зангилаа {HOST}: {NODE_OUTPUT}",
}


@DB
def test_the_stored_log_keeps_message_ids_and_parameters(finished_job: Job) -> None:
    first = finished_job.log.splitlines()[0]
    assert re.match(r"^\[\d\d:\d\d:\d\d\] i18n:", first), first
    data = json.loads(first.split(" ", 1)[1].removeprefix(I18N_PREFIX))
    assert data == {"m": "Node %(node)s: %(error)s", "p": {"node": HOST, "error": NODE_OUTPUT}}
    assert translate_log(finished_job.log, "en").splitlines()[0].endswith(EXPECTED["en"])


@DB
@pytest.mark.parametrize("language", ["ru", "mn", "en"])
def test_portal_job_page_shows_the_log_in_the_readers_language(
    finished_job: Job, cast: Cast, language: str
) -> None:
    client = Client()
    client.force_login(cast.sub_admin)
    client.cookies["django_language"] = language
    html = client.get(reverse("portal:job-detail", args=[finished_job.pk])).content.decode()
    escaped = EXPECTED[language].replace("<", "&lt;").replace(">", "&gt;")
    assert escaped in html
    assert "i18n:" not in html and "<b>by peer" not in html
    if language != "en":
        assert "Node smtp1" not in html
    # The progress bar's JSON too.
    status = client.get(reverse("portal:job-status", args=[finished_job.pk])).json()
    assert EXPECTED[language] in status["log"]


@DB
@pytest.mark.parametrize("language", ["ru", "mn", "en"])
def test_job_api_shows_the_log_in_the_requests_language(
    finished_job: Job, cast: Cast, language: str
) -> None:
    client = token_client(cast.sub_admin)
    url = reverse("job-detail", args=[finished_job.pk])
    data = client.get(url, HTTP_ACCEPT_LANGUAGE=language).json()
    lines = data["log"].splitlines()
    assert lines[0].endswith(EXPECTED[language]), lines
    assert "i18n:" not in data["log"]
    listed = client.get(reverse("job-list"), HTTP_ACCEPT_LANGUAGE=language).json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    (row,) = [r for r in rows if r["id"] == finished_job.pk]
    assert row["log"] == data["log"]
    # Rendering is for display only: the database keeps the language-neutral lines.
    assert I18N_PREFIX in Job.objects.get(pk=finished_job.pk).log


def test_a_broken_line_or_translation_never_breaks_the_log() -> None:
    log = "\n".join(
        [
            "[10:00:00] " + log_entry("%(count)d things", count="not a number"),
            "[10:00:01] i18n:{not json",
            "[10:00:02] " + log_entry("needs %(missing)s"),
            "plain line without a stamp",
        ]
    )
    with translation.override("ru"):
        lines = translate_log(log).splitlines()
    assert lines[0].startswith("[10:00:00] i18n:")
    assert lines[1] == "[10:00:01] i18n:{not json"
    assert lines[2] == "[10:00:02] needs %(missing)s"
    assert lines[3] == "plain line without a stamp"


# --------------------------------------------------------------- the rule, kept by a scan

#: Code that writes job log lines; the mail filter runs on the nodes and the demo's
#: console output is printed in the running language, so neither is scanned.
SCANNED = ["deploy", "spamhold", "mail", "servers", "tenants", "ums", "audit"]
SKIPPED = ("deploy/services/postfix/filter/", "spamhold/demo/", "/migrations/")
#: Callables that take a finished line: given a formatted string, no catalog translates it.
LINE_LOGGERS = {"log", "tlog", "_append_log"}


def _marked(node: ast.expr) -> bool:
    """A msgid makemessages collects: ``gettext_noop("literal")``, or a choice of them."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "gettext_noop":
        return len(node.args) == 1 and isinstance(node.args[0], ast.Constant)
    if isinstance(node, ast.IfExp):
        return _marked(node.body) and _marked(node.orelse)
    if (  # {"a": gettext_noop(...), ...}.get(key, gettext_noop(...))
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and isinstance(node.func.value, ast.Dict)
    ):
        return all(_marked(v) for v in node.func.value.values if v is not None) and all(
            _marked(a) for a in node.args[1:]
        )
    return False


def _formatted(node: ast.expr) -> bool:
    """A line built in English: f-string, ``%``/``+``, ``.format()`` or a bare literal."""
    if isinstance(node, ast.JoinedStr | ast.BinOp):
        return True
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return True
    if isinstance(node, ast.IfExp):
        return _formatted(node.body) or _formatted(node.orelse)
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
    )


def violations(source: str, name: str = "<source>") -> list[str]:
    """Job log calls in ``source`` that a reader could not see in their language."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        callee = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        where = f"{name}:{node.lineno}"
        passed_on = isinstance(node.args[0], ast.Name) and node.args[0].id == "msgid"
        if callee in {"say", "log_entry"} and not (passed_on or _marked(node.args[0])):
            found.append(f'{where}: {callee}() needs gettext_noop("...") as its msgid')
        elif callee in LINE_LOGGERS:
            line = node.args[1] if callee == "_append_log" and len(node.args) > 1 else node.args[0]
            if _formatted(line):
                found.append(f"{where}: {callee}() given a formatted line; use say()/log_entry()")
    return found


def test_the_scan_catches_formatted_log_lines() -> None:
    bad = """
reporter.log(f"connected to {host}")
reporter.log("plain %s" % host)
log("{} changed".format(name))
tlog("no changes")
reporter.say(f"converged {host}")
reporter.say("not marked")
log(log_entry(_("translated too early"), host=host))
"""
    assert len(violations(bad)) == 7, violations(bad)
    good = """
reporter.say(gettext_noop("connected to %(host)s"), host=host)
reporter.say(gettext_noop("a") if dry else gettext_noop("b"), paths=p)
reporter.say({"x": gettext_noop("x %(s)s")}.get(verb, gettext_noop("y %(s)s")), s=s)
log(log_entry(gettext_noop("%(service)s: activated"), service=name))
self._log(line)
logger.info(f"not a job log {x}")
"""
    assert violations(good) == []


def test_no_job_code_logs_a_formatted_string() -> None:
    found = []
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if any(skip in f"/{relative}" for skip in SKIPPED):
                continue
            found += violations(path.read_text(), relative)
    assert found == [], "\n".join(found)
