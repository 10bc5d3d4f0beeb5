"""``demo_nodes up|down`` on this machine: two real namespaced nodes, enrolled through
``bootstrapcore.sh``, converged, sent mail; the content filter's catch reaches the spam
hold queue; ``down`` leaves no namespace or process behind. Without root the command
says what it needs and succeeds (``make run`` carries on without nodes)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from audit.models import AuditRecord
from deploy import dirty
from servers.models import MetricSample, Node
from spamhold.demo.nodes import requirements, state
from spamhold.demo.nodes.mailflow import HELD_SUBJECTS
from spamhold.models import HeldMessage, Reason, Status
from tenants.models import Administrator
from ums.models import Job

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.nodes
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(bool(requirements.missing()), reason="needs root and the test packages")
def test_up_enrols_converges_holds_spam_and_down_removes_everything(
    tmp_path: Path, settings: Any
) -> None:
    settings.VAR_DIR = tmp_path  # the keeper's work folder; never a developer's var/
    dirty.forget(range(1, 200))  # node ids restart with each test database
    password = run("seed_demo").splitlines()[1].split()[1]  # the first printed login
    running: dict | None = None
    try:
        output = run("demo_nodes", "up")
        running = state.read()
        assert running is not None, output
        assert "2 messages on hold" in output, output

        # Up returned, the nodes still run (the keeper holds them).
        assert state.is_keeper(running["keeper_pid"])
        ours = {n["netns"] for n in running["nodes"]}
        assert ours <= namespaces()

        # Enrolled by the script, approved, converged, measured.
        nodes = {n.hostname: n for n in Node.objects.all()}
        assert {n.roles[0] for n in nodes.values()} == {"smtp", "imap"}
        assert all(n.status == "active" for n in nodes.values())
        assert AuditRecord.objects.filter(action="node.register").count() == 2
        assert AuditRecord.objects.filter(action="node.approve", actor_name__contains="admin")
        converges = Job.objects.filter(kind="node.converge")
        assert converges.count() >= 2
        assert set(converges.values_list("status", flat=True)) == {Job.SUCCEEDED}
        for node in nodes.values():
            assert MetricSample.objects.filter(node=node).count() >= 2

        # The held messages, attributed to the recipients' customers.
        spam = HeldMessage.objects.get(subject__endswith=HELD_SUBJECTS[0])
        assert spam.status == Status.ONHOLD and spam.reason == Reason.SPAM
        assert "GTUBE" in spam.spam_rules
        assert spam.customer.name == "Government of Demoland"
        exe = HeldMessage.objects.get(subject__endswith=HELD_SUBJECTS[1])
        assert exe.reason == Reason.ATTACHMENT and exe.customer.name == "Demo ISP"

        # ... and on the portal's spam hold page of the printed administrator.
        client = Client()
        assert client.login(username="admin", password=password)
        page = client.get(reverse("spamhold:home")).content.decode()
        assert HELD_SUBJECTS[0] in page
        assert Administrator.objects.get(username="admin").check_password(password)
    finally:
        down = run("demo_nodes", "down")
    assert running is not None
    assert "stopped" in down
    assert not ({n["netns"] for n in running["nodes"]} & namespaces())
    assert not state.is_keeper(running["keeper_pid"])
    assert not [n["sshd_pid"] for n in running["nodes"] if alive(n["sshd_pid"])]
    assert state.read() is None
    assert "No demo nodes are running" in run("demo_nodes", "down")


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the command as nobody, which needs root")
def test_without_root_up_says_what_it_needs_and_succeeds() -> None:
    # pytest's tmp_path is private to root: nobody needs a folder it can reach.
    with tempfile.TemporaryDirectory(prefix="ums-demo-") as folder:
        _run_up_as_nobody(Path(folder))


def _run_up_as_nobody(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "UMS_VAR_DIR": str(tmp_path),
        "DJANGO_SECRET_KEY": "x" * 50,
        "UMS_ENCRYPTION_KEYS": "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=",
        "HOME": str(tmp_path),
    }
    tmp_path.chmod(0o777)
    before = namespaces()
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "manage.py", "demo_nodes", "up"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Demo nodes skipped" in proc.stdout and "need root" in proc.stdout
    assert namespaces() == before
    assert not (tmp_path / "demo-nodes").exists()
