"""Real faults during a converge, on real nodes: the node must end right.

Each test breaks something for real (the node's sshd killed at a converge phase, a full
filesystem under the stage, settings Postfix's own check lets through, a configuration
that passes ``postfix check`` but answers 451) and then asserts what a user would see:
the file content AND what the running Postfix does over SMTP, mail still delivered, no
stage left behind. "Heals" here means a second converge run (what the reconciler does
after a failure) fixes the node without anyone touching it.

The observable setting is ``relay_networks``: with the test client's address in it,
Postfix relays from that client (RCPT to an outside domain: 250), without it, it
refuses (554). ``postconf -h mynetworks`` shows the file; the RCPT answer shows the
running daemon.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import smtplib
import subprocess
from collections.abc import Callable, Iterator

import pytest
from django.urls import reverse

from deploy import converge as converge_module
from deploy import node_settings
from tests.fixtures import Cast, token_client

from .conftest import MailNodes
from .fleet import in_node
from .test_mail_flow import DOMAIN, send, setup_mail, wait_for_message

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

OUTSIDE = "someone@elsewhere.test"
#: sha256 of every file under /etc/postfix, sorted by path.
LIST_SUMS = "cd /etc/postfix && find . -type f | sort | xargs -d '\\n' sha256sum --"


# --------------------------------------------------------------------------- helpers


def converge_job(cast: Cast, node):
    """Converge ``node`` through the API (tasks run in-process); the finished Job."""
    from ums.models import Job

    response = token_client(cast.sub_admin).post(
        reverse("node-converge", args=[node.pk]), {}, format="json"
    )
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["id"])


def relay_answer(nodes: MailNodes) -> int:
    """The SMTP node's answer to RCPT TO an outside address from the test client."""
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("bob@outside.test")
        code, _msg = smtp.rcpt(OUTSIDE)
        smtp.rset()
    return code


def client_network(nodes: MailNodes) -> str:
    """The network the test client connects from (the harness bridge address)."""
    return str(ipaddress.ip_network(f"{nodes.cluster.bridge_address}/32"))


def node_files(nodes: MailNodes, root: str = "/etc/postfix") -> list[str]:
    """Names in ``root`` as the node's daemons see it (its mount namespace)."""
    return in_node(nodes.smtp, ["ls", "-A", root]).stdout.split()


def kill_sshd(nodes: MailNodes) -> None:
    """SIGKILL the SMTP node's sshd: the listener and every session (the controller's
    connection drops mid-converge). Postfix and Courier keep running."""
    tnode = nodes.smtp
    listener = tnode._process
    assert listener is not None
    for pid in tnode.processes():
        try:
            with open(f"/proc/{pid}/comm") as handle:
                if handle.read().strip() != "sshd":
                    continue
        except OSError:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    listener.wait(timeout=30)


@pytest.fixture
def phase_hook() -> Iterator[Callable[[Callable[[str, str], None]], None]]:
    """Install a ``deploy.converge.PHASE_HOOK`` for the test; removed afterwards."""

    def install(hook: Callable[[str, str], None]) -> None:
        converge_module.PHASE_HOOK = hook

    yield install
    converge_module.PHASE_HOOK = None


# --------------------------------------------------------------------------- sshd killed


#: Phases after which the new files are live (the rest leave the old ones).
LIVE_AFTER = ("reload", "record")


@pytest.mark.parametrize("phase", ["stage", "validate", "install", "reload", "record"])
def test_sshd_killed_at_each_phase_then_the_next_converge_ends_right(
    phase: str, cast: Cast, mail_nodes: MailNodes, settings, phase_hook
) -> None:
    setup_mail(cast)
    assert relay_answer(mail_nodes) == 554  # the client may not relay yet
    network = client_network(mail_nodes)
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "relay_networks": [network]}

    fired: list[str] = []

    def hook(at: str, service: str) -> None:
        if at == phase and service == "postfix" and not fired:
            fired.append(at)
            kill_sshd(mail_nodes)

    phase_hook(hook)
    from ums.models import Job

    job = converge_job(cast, mail_nodes.smtp_node)
    phase_hook(lambda at, service: None)
    assert fired == [phase]
    assert job.status == Job.FAILED, job.log
    main_cf = mail_nodes.smtp.path("/etc/postfix/main.cf").read_text()
    if phase == "reload":
        # The fault this guards against: the new main.cf is live, the daemon never
        # reloaded it, and a converge that only looks at files would see nothing to do.
        assert network in main_cf
        assert relay_answer(mail_nodes) == 554
    elif phase == "record":
        # Reloaded and probed, but the node's record was never written: the next run
        # cannot know the daemon runs these files, so it reloads and probes again.
        assert network in main_cf
        assert relay_answer(mail_nodes) == 250
    else:
        assert network not in main_cf

    mail_nodes.smtp.start()  # sshd back; nothing else is touched by hand
    job = converge_job(cast, mail_nodes.smtp_node)
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    if phase in LIVE_AFTER:
        assert job.result["changed"] == {}, job.result
        assert "postfix" in job.result["reloaded"], job.result
    else:
        assert "postfix" in job.result["changed"], job.result
    # The file and the running daemon agree.
    mynetworks = in_node(mail_nodes.smtp, ["postconf", "-h", "mynetworks"]).stdout
    assert network in mynetworks
    assert relay_answer(mail_nodes) == 250
    assert not [n for n in node_files(mail_nodes) if ".ums-stage-" in n or ".ums-prev" in n]
    assert job.result["probed"]["postfix"].startswith(f"RCPT TO:<alice@{DOMAIN}>: 250")

    # A third run has nothing left to do, and mail flows.
    job = converge_job(cast, mail_nodes.smtp_node)
    assert job.status == Job.SUCCEEDED
    assert job.result["changed"] == {} and job.result["reloaded"] == [], job.result
    send(mail_nodes, f"alice@{DOMAIN}", f"marker-after-{phase}")
    wait_for_message(mail_nodes, "alice", f"marker-after-{phase}")


# --------------------------------------------------------------------------- full disk


def test_full_filesystem_while_staging_leaves_no_stage_and_live_files_untouched(
    cast: Cast, mail_nodes: MailNodes, settings
) -> None:
    from ums.models import Job

    setup_mail(cast)
    smtp = mail_nodes.smtp
    host_copy = smtp.path("/etc/postfix")  # the private folder behind the node's /etc/postfix
    used_kb = int(subprocess.run(["du", "-sk", str(host_copy)], capture_output=True,
                                 text=True, check=True).stdout.split()[0])  # fmt: skip
    # A tmpfs over /etc/postfix inside the node, holding the live files with a little
    # room to spare: the stage (a copy of the whole folder) cannot fit.
    size_kb = used_kb + max(64, used_kb // 3)
    in_node(smtp, ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "ums-full", "/etc/postfix"])
    try:
        in_node(smtp, ["cp", "-a", f"{host_copy}/.", "/etc/postfix/"])
        before = in_node(smtp, ["sh", "-c", LIST_SUMS]).stdout
        settings.UMS_CONVERGE = {
            **settings.UMS_CONVERGE,
            "relay_networks": [client_network(mail_nodes)],
        }
        job = converge_job(cast, mail_nodes.smtp_node)
        assert job.status == Job.FAILED
        assert "No space left on device" in job.error, job.error
        assert not [n for n in node_files(mail_nodes) if ".ums-stage-" in n]
        after = in_node(smtp, ["sh", "-c", LIST_SUMS]).stdout
        assert after == before
        assert relay_answer(mail_nodes) == 554  # the old configuration still runs
        send(mail_nodes, f"alice@{DOMAIN}", "marker-full-disk")
        wait_for_message(mail_nodes, "alice", "marker-full-disk")
    finally:
        # Lazily: smtpd processes may hold a map of the tmpfs open.
        in_node(smtp, ["umount", "-l", "/etc/postfix"], check=False)
    # With room again, the next converge finishes the work.
    job = converge_job(cast, mail_nodes.smtp_node)
    assert job.status == Job.SUCCEEDED, job.error
    assert relay_answer(mail_nodes) == 250


# --------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("relay_networks", ["10.9.0.0/99"], "'10.9.0.0/99' is not a network"),
        ("relay_networks", ["10.9.0.1/16"], "has host bits set"),
        (
            "postfix_maillog_file",
            "/var/spool/postfix/maillog\nmynetworks = 0.0.0.0/0",
            "control character",
        ),
        ("postfix_maillog_file", "/tmp/maillog", "not under an allowed prefix"),
    ],
)
def test_bad_settings_are_refused_with_their_reason_and_mail_keeps_flowing(
    option: str, value: object, reason: str, cast: Cast, mail_nodes: MailNodes, settings
) -> None:
    from ums.models import Job

    setup_mail(cast)
    main_cf = mail_nodes.smtp.path("/etc/postfix/main.cf").read_bytes()
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, option: value}
    job = converge_job(cast, mail_nodes.smtp_node)
    assert job.status == Job.FAILED
    assert option in job.error and reason in job.error, job.error
    assert mail_nodes.smtp.path("/etc/postfix/main.cf").read_bytes() == main_cf
    send(mail_nodes, f"alice@{DOMAIN}", "marker-bad-setting")
    wait_for_message(mail_nodes, "alice", "marker-bad-setting")


def test_a_log_path_postfix_refuses_fails_the_job_with_postfixs_reason(
    cast: Cast, mail_nodes: MailNodes, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past our own check (an operator widened the prefixes): ``postfix check`` refuses
    the path without printing anything unless it has a tty; the job must say why."""
    from ums.models import Job

    setup_mail(cast)
    monkeypatch.setattr(node_settings, "LOG_PREFIXES", ("/var/", "/srv/"))
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "postfix_maillog_file": "/srv/maillog"}
    job = converge_job(cast, mail_nodes.smtp_node)
    assert job.status == Job.FAILED
    assert "does not match any prefix in maillog_file_prefixes" in job.error, job.error
    send(mail_nodes, f"alice@{DOMAIN}", "marker-log-path")
    wait_for_message(mail_nodes, "alice", "marker-log-path")


# --------------------------------------------------------------------------- probe + rollback


def test_a_config_that_passes_postfix_check_but_answers_451_is_rolled_back(
    cast: Cast, mail_nodes: MailNodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restriction naming a map that does not exist: ``postfix check`` and our map
    checks pass, and then every RCPT gets "451 4.3.0 Temporary lookup failure"."""
    from deploy.services.postfix import PostfixService
    from ums.models import Job

    setup_mail(cast)
    root = mail_nodes.smtp.path("/etc/postfix")
    live = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    original = PostfixService.main_cf

    def missing_map(self, state):  # a test-only override: a real, plausible mistake
        return original(self, state) + (
            "smtpd_recipient_restrictions = check_recipient_access hash:/etc/postfix/absent\n"
        )

    monkeypatch.setattr(PostfixService, "main_cf", missing_map)
    job = converge_job(cast, mail_nodes.smtp_node)
    assert job.status == Job.FAILED
    assert "postfix: rolled back: RCPT TO:<alice@" in job.error, job.error
    assert "451 4.3." in job.error, job.error
    assert "still fails" not in job.error, job.error
    # The previous files are back, byte for byte (the record aside), nothing left over.
    after = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if not k.startswith(".ums-state-")} == {
        k: v for k, v in live.items() if not k.startswith(".ums-state-")
    }
    assert "absent" not in in_node(mail_nodes.smtp, ["postconf", "-n"]).stdout
    send(mail_nodes, f"alice@{DOMAIN}", "marker-rolled-back")
    wait_for_message(mail_nodes, "alice", "marker-rolled-back")

    # The record says the old files run: without the mistake there is nothing to do.
    monkeypatch.setattr(PostfixService, "main_cf", original)
    job = converge_job(cast, mail_nodes.smtp_node)
    assert job.status == Job.SUCCEEDED, job.error
    assert job.result["changed"] == {} and job.result["reloaded"] == [], job.result
