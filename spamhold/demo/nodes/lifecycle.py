"""``demo_nodes up`` and ``down``.

``up``: start the keeper (the harness cluster, detached), enrol both nodes through
``bootstrapcore.sh``, approve them (approval converges them: packages, Postfix with the
content filter, SpamAssassin, ClamAV, Courier, the delivery agent), collect metrics, send
a little mail and ingest what the filter held. Running it again while the nodes run
re-converges them and sends the mail again; after a ``down`` the same nodes come back
(same host keys and files, kept under ``var/demo-nodes/cluster``).

``down``: stop the keeper, which stops every node process and deletes the namespaces,
links and bridge; anything a dead keeper left is removed from what ``state.json`` names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.test.utils import override_settings
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from deploy import actions as deploy_actions
from deploy import metrics
from servers.models import Node
from tenants.models import Administrator
from ums import context
from ums.models import Job

from .. import jobrun
from . import enrol, mailflow, requirements, state

Log = Callable[[str], Any]
KEEPER_START_TIMEOUT = 120
KEEPER_STOP_TIMEOUT = 60
ROLES = {"node1": "smtp", "node2": "imap"}
# What the demo's nodes need rendered: files instead of syslog (the nodes run none) and
# no DNS blocklists (their namespaces have no resolver). UMS_NODE_SETTINGS wins.
NODE_SETTINGS = {
    "postfix_maillog_file": "/var/spool/postfix/maillog",
    "lda_log_file": "/var/lib/ums-lda/lda.log",
    "spam_network_checks": False,
}


class DemoNodesFailed(RuntimeError):
    pass


def up(log: Log) -> bool:
    """Bring the demo nodes up; False (with the reason logged) when this machine cannot."""
    problems = requirements.missing()
    if problems:
        log(requirements.explain(problems))
        return False
    current = state.read()
    if current and state.is_keeper(current["keeper_pid"]):
        log(_("The demo nodes are already running; converging them and sending mail again."))
    else:
        down(lambda _line: None)
        current = _start_keeper(log)
    node_settings = {**NODE_SETTINGS, **settings.UMS_CONVERGE}
    with override_settings(UMS_CONVERGE=node_settings), context.acting(channel=context.CHANNEL_CLI):
        rows, held = _bring_up(current, log)
    rows = [Node.objects.get(pk=r.pk) for r in rows]
    names = ", ".join(f"{r.hostname} ({r.ssh_address}, {r.roles[0]})" for r in rows)
    log(
        ngettext(
            "Demo nodes up: %(nodes)s; %(count)d message on hold. Stop them with: %(command)s",
            "Demo nodes up: %(nodes)s; %(count)d messages on hold. Stop them with: %(command)s",
            held,
        )
        % {"nodes": names, "count": held, "command": "manage.py demo_nodes down"}
    )
    return True


def _bring_up(current: dict[str, Any], log: Log) -> tuple[list[Node], int]:
    """Enrol (or re-converge) the running nodes, send mail; the node rows and held count."""
    admin = _admin()
    zone = enrol.zone(admin)
    moved = enrol.moved(zone, current["nodes"])
    if moved:
        current = _renew(admin, moved, log)
    nodes = {n["name"]: n for n in current["nodes"]}
    # The IMAP node first: the SMTP node's transport map then points at it at once.
    order = [(nodes["node2"], ROLES["node2"]), (nodes["node1"], ROLES["node1"])]
    already = {n["name"] for n, _r in order if enrol.known_node(zone, n)}
    rows = enrol.enrol(admin, zone, order, current["bridge_address"], log)
    for (node, _role), row in zip(order, rows, strict=True):
        if node["name"] in already:
            _converge(admin, row, log)
        _check_converged(row)
    metrics.sweep(rows)
    mailflow.send_demo_mail(nodes["node1"], log)
    held = mailflow.ingest_held(admin)
    metrics.sweep(rows)  # a second sample: the charts have a line, CPU a percentage
    return rows, held


def _admin() -> Administrator | None:
    admin = Administrator.objects.filter(username="admin", is_active=True).first()
    if admin is None:
        call_command("seed_demo")
        admin = Administrator.objects.filter(username="admin").first()
    return admin


def _renew(admin: Administrator | None, moved: list[Node], log: Log) -> dict[str, Any]:
    """The nodes came back on other addresses (another cluster holds their old slot):
    decommission the old rows and start new nodes (new host keys) to enrol afresh."""
    log(_("The demo nodes' addresses changed: decommissioning the old ones, enrolling new ones."))
    down(lambda _line: None)
    shutil.rmtree(state.workdir() / "cluster", ignore_errors=True)
    for row in moved:
        job = deploy_actions.start_node_action(actor=admin, node=row, name="decommission")
        jobrun.finish(job.pk)
    return _start_keeper(log)


def _start_keeper(log: Log) -> dict[str, Any]:
    workdir = state.workdir()
    workdir.mkdir(parents=True, exist_ok=True)
    state.error_path().unlink(missing_ok=True)
    log(_("Starting two demo nodes (SMTP and IMAP) in network namespaces…"))
    with state.log_path().open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", state.KEEPER_MODULE, str(workdir)],
            cwd=Path(settings.BASE_DIR),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C on make run must not reach the nodes
        )
    deadline = time.monotonic() + KEEPER_START_TIMEOUT
    while time.monotonic() < deadline:
        current = state.read()
        if current and current.get("keeper_pid") == process.pid:
            return current
        if process.poll() is not None:
            error = state.error_path()
            reason = error.read_text() if error.exists() else f"exit code {process.returncode}"
            raise DemoNodesFailed(f"the demo nodes did not start:\n{reason}")
        time.sleep(0.2)
    process.terminate()
    raise DemoNodesFailed(f"the demo nodes did not start within {KEEPER_START_TIMEOUT} s")


def _converge(admin: Administrator | None, row: Node, log: Log) -> None:
    """The node's Converge button: after a restart its daemons must be started again."""
    log(_("Converging %(host)s…") % {"host": row.hostname})
    job = deploy_actions.start_node_action(actor=admin, node=row, name="converge")
    jobrun.finish(job.pk)


def _check_converged(row: Node) -> None:
    last = Job.objects.filter(kind="node.converge", object_id=str(row.pk)).order_by("-pk").first()
    if last is None or jobrun.wait(last.pk) != Job.SUCCEEDED:
        error = Job.objects.get(pk=last.pk).error if last else "no converge job"
        raise DemoNodesFailed(f"converging {row.hostname} failed: {error}")


def down(log: Log) -> None:
    """Stop the demo nodes and remove their namespaces; harmless when none run."""
    current = state.read()
    if current is None:
        log(_("No demo nodes are running."))
        return
    pid = current.get("keeper_pid", 0)
    if state.is_keeper(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + KEEPER_STOP_TIMEOUT
        while state.is_keeper(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    _remove_leftovers(current)
    state.forget()
    log(_("Demo nodes stopped; their network namespaces are removed."))


def _run(argv: list[str], input: str | None = None) -> str:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
    return proc.stdout


def _remove_leftovers(current: dict[str, Any]) -> None:
    """What a killed keeper could not remove: processes, namespaces, links, bridge."""
    if state.is_keeper(current.get("keeper_pid", 0)):
        os.kill(current["keeper_pid"], signal.SIGKILL)
    existing = set(_run(["ip", "netns", "list"]).split())
    namespaces = [n["netns"] for n in current.get("nodes", []) if n.get("netns") in existing]
    for ns in namespaces:
        for pid in _run(["ip", "netns", "pids", ns]).split():
            if pid.isdigit():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    if namespaces:
        _run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in namespaces))
    bridge = current.get("bridge")
    if bridge and bridge in _run(["ip", "-o", "link", "show"]):
        _run(["ip", "link", "del", bridge])
