"""Real faults during a converge, on real nodes: the node must end right.

Each test breaks something for real (the node's sshd killed at a converge phase, a full
filesystem under the stage, settings Postfix's own check lets through, a configuration
that passes ``postfix check`` but answers 451) and then asserts what a user would see:
the file content AND what the running Postfix does over SMTP, mail still delivered, no
stage left behind. "Heals" means the reconciler (``ums.reconcile.run_all``, what beat runs
every few seconds; jobs run in-process here) converges the node again by itself until its
applied generation is its desired one: no converge is started by hand. The node enforces
the converge lease's fencing token on its files: a converge given up for dead cannot
install its older files after a newer one did.

The observable setting is ``relay_networks``: with the test client's address in it,
Postfix relays from that client (RCPT to an outside domain: 250), without it, it
refuses (554). ``postconf -h mynetworks`` shows the file; the RCPT answer shows the
running daemon.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import signal
import smtplib
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from django.urls import reverse

from deploy import converge as converge_module
from deploy import desired, dirty, node_settings
from deploy.nodes import session
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


def with_absent_map(main_cf: str) -> str:
    """main.cf whose port-25 recipient restrictions start with a map that does not exist
    (the SMTP node already has the parameter: a second line would fail postconf's check)."""
    key = "smtpd_recipient_restrictions = "
    assert key in main_cf
    return main_cf.replace(key, key + "check_recipient_access hash:/etc/postfix/absent, ", 1)


def bookkeeping(name: str) -> bool:
    """The converge's own files in a config root: run-state records and the fence."""
    return name.startswith(converge_module.STATE_PREFIX) or name == converge_module.FENCE_NAME


def converge_jobs(node):
    from ums.models import Job

    return Job.objects.filter(kind="node.converge", object_id=str(node.pk)).order_by("pk")


def heal_by_reconciler(node, *, within: float = 90):
    """Run reconciler passes, as beat does, until ``node``'s applied generation is its
    desired one and no converge holds it; the converge job that got it there."""
    from ums import reconcile

    deadline = time.monotonic() + within
    while True:
        state = dirty.state_of(node.pk)
        assert state is not None
        if not state.dirty and state.lease_owner == "":
            break
        assert time.monotonic() < deadline, (
            f"not healed within {within} s: applied {state.applied_generation}, desired "
            f"{state.desired_generation}, {state.failures} failure(s): {state.last_error}"
        )
        reconcile.run_all()
        time.sleep(0.2)
    job = converge_jobs(node).last()
    assert job is not None
    return job


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
def test_sshd_killed_at_each_phase_then_the_reconciler_heals_the_node(
    phase: str, cast: Cast, mail_nodes: MailNodes, settings, phase_hook
) -> None:
    setup_mail(cast)
    # Backoff after a failure: 1 s instead of 5 (the reconciler's rules are unchanged).
    settings.UMS_CONVERGE_RETRY_MAX_SECONDS = 1
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

    # The failed converge left the node dirty (even though it was clean before: it was
    # requested by hand and changed the node halfway), with the reason.
    state = dirty.state_of(mail_nodes.smtp_node.pk)
    assert state is not None and state.dirty and state.failures == 1, state.__dict__
    assert state.last_error

    mail_nodes.smtp.start()  # sshd back; nothing else is touched by hand
    failed = job.pk
    job = heal_by_reconciler(mail_nodes.smtp_node)
    assert job.pk != failed
    assert "not applied yet" in job.params["reason"], job.params
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert dirty.state_of(mail_nodes.smtp_node.pk).failures == 0
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
        return with_absent_map(original(self, state))

    monkeypatch.setattr(PostfixService, "main_cf", missing_map)
    job = converge_job(cast, mail_nodes.smtp_node)
    assert job.status == Job.FAILED
    assert "postfix: rolled back: RCPT TO:<alice@" in job.error, job.error
    assert "451 4.3." in job.error, job.error
    assert "still fails" not in job.error, job.error
    # The previous files are back, byte for byte (the record aside), nothing left over.
    after = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if not bookkeeping(k)} == {
        k: v for k, v in live.items() if not bookkeeping(k)
    }
    assert "absent" not in in_node(mail_nodes.smtp, ["postconf", "-n"]).stdout
    send(mail_nodes, f"alice@{DOMAIN}", "marker-rolled-back")
    wait_for_message(mail_nodes, "alice", "marker-rolled-back")

    # The record says the old files run: without the mistake there is nothing to do.
    monkeypatch.setattr(PostfixService, "main_cf", original)
    job = converge_job(cast, mail_nodes.smtp_node)
    assert job.status == Job.SUCCEEDED, job.error
    assert job.result["changed"] == {} and job.result["reloaded"] == [], job.result


def test_a_rolled_back_converge_stays_dirty_is_retried_with_backoff_and_alerts_after_the_cap(
    cast: Cast, mail_nodes: MailNodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconciler treats a rollback like any failure: the node stays dirty, each
    retry waits longer, after ``ALERT_AFTER`` the node shows an alert with the reason, and
    once the cause is gone the next retry applies it and resolves the alert."""
    from django.utils import timezone

    from deploy.models import NodeConvergeState
    from deploy.reconcile import converge_dirty_nodes
    from deploy.services.postfix import PostfixService
    from servers.models import NodeAlert
    from ums import reconcile
    from ums.models import Job

    setup_mail(cast)
    node = mail_nodes.smtp_node
    original = PostfixService.main_cf

    def missing_map(self, state):  # passes postfix check, answers 451 (see above)
        return with_absent_map(original(self, state))

    monkeypatch.setattr(PostfixService, "main_cf", missing_map)
    job = converge_job(cast, node)
    assert job.status == Job.FAILED and "postfix: rolled back:" in job.error, job.error
    for failures in range(1, dirty.ALERT_AFTER + 1):
        state = dirty.state_of(node.pk)
        assert state is not None and state.dirty and state.failures == failures, state.__dict__
        assert "rolled back" in state.last_error
        wait = (state.next_attempt_at - timezone.now()).total_seconds()
        expected = dirty.retry_delay(failures).total_seconds()
        assert expected - 3 < wait <= expected, (failures, wait)
        # Backing off: a reconciler pass before the time queues nothing.
        assert converge_dirty_nodes() == {}
        alerts = NodeAlert.objects.filter(node=node, kind=dirty.ALERT_KIND, resolved_at=None)
        assert alerts.exists() is (failures >= dirty.ALERT_AFTER)
        if failures == dirty.ALERT_AFTER:
            break
        # The clock moves past the backoff; beat's next pass retries.
        NodeConvergeState.objects.filter(node=node).update(next_attempt_at=timezone.now())
        before = converge_jobs(node).count()
        reconcile.run_all()
        retry = converge_jobs(node).last()
        assert converge_jobs(node).count() == before + 1
        assert f"retry after {failures} failure" in retry.params["reason"], retry.params
        assert retry.status == Job.FAILED and "rolled back" in retry.error, retry.error
    alert = NodeAlert.objects.get(node=node, kind=dirty.ALERT_KIND, resolved_at=None)
    assert "rolled back" in alert.message and node.hostname in alert.message, alert.message
    send(mail_nodes, f"alice@{DOMAIN}", "marker-while-retrying")  # the old files still serve
    wait_for_message(mail_nodes, "alice", "marker-while-retrying")

    # The cause is fixed (here: the mistake gone); the next retry applies and resolves.
    monkeypatch.setattr(PostfixService, "main_cf", original)
    NodeConvergeState.objects.filter(node=node).update(next_attempt_at=timezone.now())
    job = heal_by_reconciler(node)
    assert job.status == Job.SUCCEEDED, job.error
    assert not NodeAlert.objects.filter(node=node, kind=dirty.ALERT_KIND, resolved_at=None)
    assert dirty.state_of(node.pk).failures == 0


# --------------------------------------------------------------------------- fencing


def fence_of(nodes: MailNodes) -> int:
    """The token the SMTP node's Postfix fence holds."""
    return int(nodes.smtp.path(f"/etc/postfix/{converge_module.FENCE_NAME}").read_text())


def converge_with_token(node, token: object) -> converge_module.ConvergeResult:
    """A real converge of ``node`` whose installs carry ``token`` (what a job passes)."""
    state = desired.build(node)
    with session(node) as conn:
        return converge_module.converge(conn, state, fence=token)  # type: ignore[arg-type]


def test_the_node_refuses_an_install_with_an_older_token_than_it_has_seen(
    cast: Cast, mail_nodes: MailNodes, settings
) -> None:
    setup_mail(cast)
    node = mail_nodes.smtp_node
    network = client_network(mail_nodes)
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "relay_networks": [network]}
    result = converge_with_token(node, 10**6 + 5)
    assert result.changed == {"postfix": ["/etc/postfix/main.cf"]}, result.changed
    assert fence_of(mail_nodes) == 10**6 + 5
    main_cf = mail_nodes.smtp.path("/etc/postfix/main.cf").read_bytes()
    assert relay_answer(mail_nodes) == 250

    # An older converge (its settings without the network) comes late: refused.
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "relay_networks": []}
    with pytest.raises(converge_module.Superseded) as refused:
        converge_with_token(node, 10**6 + 4)
    assert str(refused.value) == (
        f"a newer converge (token {10**6 + 5}) already configured this node"
    )
    assert mail_nodes.smtp.path("/etc/postfix/main.cf").read_bytes() == main_cf
    assert network in in_node(mail_nodes.smtp, ["postconf", "-h", "mynetworks"]).stdout
    assert relay_answer(mail_nodes) == 250
    assert not [n for n in node_files(mail_nodes) if ".ums-stage-" in n or ".ums-prev" in n]
    assert fence_of(mail_nodes) == 10**6 + 5

    # The same token again (a retry of the same converge) and a newer one go through.
    assert converge_with_token(node, 10**6 + 5).changed == {"postfix": ["/etc/postfix/main.cf"]}
    assert relay_answer(mail_nodes) == 554
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "relay_networks": [network]}
    converge_with_token(node, 10**6 + 6)
    assert fence_of(mail_nodes) == 10**6 + 6 and relay_answer(mail_nodes) == 250

    # Only an int reaches the node's command line.
    for bad in ("7; touch /tmp/x", True, -1, 2**63, 7.0):
        with pytest.raises(ValueError, match="invalid fencing token"):
            converge_with_token(node, bad)

    # A token sequence behind the node's fence (a restored database, a node enrolled
    # again): the refused job moves the sequence past it and the reconciler's retry
    # applies, instead of every converge being refused for good.
    from ums.models import Job

    settings.UMS_CONVERGE_RETRY_MAX_SECONDS = 1
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "relay_networks": []}
    job = converge_job(cast, node)
    assert job.status == Job.FAILED
    assert job.error == f"a newer converge (token {10**6 + 6}) already configured this node"
    assert dirty.state_of(node.pk).lease_token == 10**6 + 6
    job = heal_by_reconciler(node)
    assert job.status == Job.SUCCEEDED, job.error
    assert fence_of(mail_nodes) == 10**6 + 7 and relay_answer(mail_nodes) == 554


def test_a_converge_given_up_for_dead_cannot_install_after_the_one_that_took_over(
    cast: Cast, mail_nodes: MailNodes, settings, phase_hook
) -> None:
    """End to end with the real lease: converge A stalls just before its renames, its
    lease lapses, converge B takes the node over and applies newer settings; then A wakes
    up and tries to install. The node refuses A, B's files and B's outcome stand."""
    from django.utils import timezone

    from deploy.models import NodeConvergeState
    from ums.models import Job

    setup_mail(cast)
    node = mail_nodes.smtp_node
    # No heartbeat renews A's lease while the test lets it lapse.
    settings.UMS_JOB_STALE_SECONDS = 600
    network = client_network(mail_nodes)
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "relay_networks": [network]}
    newer = "192.0.2.0/24"
    taken_over: list = []

    def hook(at: str, service: str) -> None:
        if at != "install" or service != "postfix" or taken_over:
            return
        # A is staged and checked, about to rename. It stalls here; its lease lapses.
        state = NodeConvergeState.objects.get(node=node)
        taken_over.append(state.lease_token)
        NodeConvergeState.objects.filter(node=node).update(
            lease_expires_at=timezone.now() - datetime.timedelta(seconds=1)
        )
        settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "relay_networks": [newer]}
        dirty.bump([node.pk], reason="relay networks changed")
        taken_over.append(converge_job(cast, node))  # B: runs to its end, in-process

    phase_hook(hook)
    job_a = converge_job(cast, node)
    phase_hook(lambda at, service: None)
    token_a, job_b = taken_over
    job_a.refresh_from_db()
    job_b.refresh_from_db()

    assert job_b.status == Job.SUCCEEDED, f"{job_b.log}\n{job_b.error}"
    assert job_b.result["changed"] == {"postfix": ["/etc/postfix/main.cf"]}, job_b.result
    assert job_a.status == Job.FAILED
    assert job_a.error == (
        f"a newer converge (token {token_a + 1}) already configured this node"
    ), job_a.error
    # B's files are live and running; A left nothing behind.
    mynetworks = in_node(mail_nodes.smtp, ["postconf", "-h", "mynetworks"]).stdout
    assert newer in mynetworks and network not in mynetworks
    assert relay_answer(mail_nodes) == 554
    assert not [n for n in node_files(mail_nodes) if ".ums-stage-" in n or ".ums-prev" in n]
    assert fence_of(mail_nodes) == token_a + 1
    # B's outcome stands in the database: applied, no failure counted for A's refusal.
    state = dirty.state_of(node.pk)
    assert state is not None and not state.dirty and state.failures == 0, state.__dict__
    assert state.lease_token == token_a + 1 and state.lease_owner == ""
    send(mail_nodes, f"alice@{DOMAIN}", "marker-after-fence")
    wait_for_message(mail_nodes, "alice", "marker-after-fence")
