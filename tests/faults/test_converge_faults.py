"""Converges survive dead workers and a dead sshd, and the fleet heals by itself.

Real Celery worker and beat processes (tests/harness/worker.py), real mail nodes
(tests/converge/conftest.py). Each test stops a converge in the middle with a node command
that hangs (:class:`tests.faults.nodes.Gate`), or makes its change while the worker is
dead (and the broker loses the message), kills something, and then only waits: no manual
converge, no key deleted by hand. The end state is checked where a user would
notice it: the SMTP node answers for the new alias (``postmap -q`` and ``RCPT``), mail to
the new mailbox lands in its Maildir on the IMAP node, every node's applied generation
equals its desired one with no lease left, and each job's final state is true.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from deploy.models import NodeConvergeState
from servers.models import Node
from tests.converge.conftest import MailNodes
from tests.converge.test_courier_access import add_mailbox
from tests.converge.test_incremental import postmap_query, rcpt
from tests.converge.test_mail_flow import DOMAIN, Cast_holder, send, setup_mail, wait_for_message
from tests.fixtures import Cast, token_client
from tests.harness.worker import wait_for
from ums.models import Job

from .conftest import stack
from .nodes import Gate, kill_sshd, start_sshd

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

#: Seconds the system gets to heal after the fault (lease and heartbeat are 6 s here;
#: a worker restart takes a few seconds on a busy machine).
HEAL_BOUND = 120


def converge_jobs(node: Node) -> list[Job]:
    return list(Job.objects.filter(kind="node.converge", object_id=str(node.pk)).order_by("pk"))


def lease_holder(node: Node) -> Job | None:
    """The running converge job holding the node's lease, if any."""
    state = NodeConvergeState.objects.filter(node=node).first()
    if state is None or not state.lease_owner.startswith("job:"):
        return None
    return Job.objects.filter(pk=int(state.lease_owner[4:]), status=Job.RUNNING).first()


def converged(nodes: MailNodes) -> bool:
    """Every node's desired generation applied, no lease held, no converge queued."""
    for node in (nodes.smtp_node, nodes.imap_node):
        state = NodeConvergeState.objects.get(node=node)
        if state.desired_generation != state.applied_generation or state.lease_owner:
            return False
    return not Job.objects.filter(
        kind="node.converge", status__in=(Job.PENDING, Job.RUNNING)
    ).exists()


def make_changes(client, domain: dict) -> None:
    """A new mailbox and an alias to it: the SMTP node's maps and the IMAP node's userdb
    must change."""
    add_mailbox(client, domain, "carol")
    response = client.post(
        reverse("mail-alias-list"),
        {"domain": domain["id"], "localPart": "sales", "targets": [f"carol@{DOMAIN}"]},
        format="json",
    )
    assert response.status_code == 201, response.content


def assert_changes_applied(nodes: MailNodes) -> None:
    assert postmap_query(nodes, "virtual_aliases", f"sales@{DOMAIN}") == f"carol@{DOMAIN}"
    assert rcpt(nodes, f"sales@{DOMAIN}") == 250
    send(nodes, f"sales@{DOMAIN}", "marker-healed")
    wait_for_message(nodes, "carol", "marker-healed", timeout=60)


def assert_jobs_true(node: Node, stopped: Job) -> None:
    """The job whose run was killed either resumed to success or failed with a sentence
    for the administrator, superseded by a later converge that succeeded."""
    stopped.refresh_from_db()
    assert stopped.status in (Job.SUCCEEDED, Job.FAILED), stopped.status
    if stopped.status == Job.FAILED:
        assert stopped.error and "Traceback" not in stopped.error, stopped.error
        later = [j for j in converge_jobs(node) if j.pk > stopped.pk]
        assert any(j.status == Job.SUCCEEDED for j in later), [
            (j.pk, j.status, j.error) for j in later
        ]
    for job in converge_jobs(node):
        assert job.status in Job.FINISHED, (job.pk, job.status)
        assert "Traceback" not in job.error, job.error


def stop_in_the_middle(nodes: MailNodes, gate: Gate, client, domain: dict) -> Job:
    """Make the changes with the SMTP node's postfix gated; the converge job holding the
    node's lease once it hangs there."""
    gate.close()
    make_changes(client, domain)
    wait_for(gate.waiting, timeout=90, what="the SMTP converge to reach the gate")
    holder = wait_for(lambda: lease_holder(nodes.smtp_node), timeout=10, what="lease holder")
    return holder


@pytest.fixture
def prepared(cast: Cast, mail_nodes: MailNodes, fault_settings):
    """Mail set up (in-process), the SMTP node's postfix gated; the stack's environment."""
    Cast_holder.cast = cast
    client, domain = setup_mail(cast)
    gate = Gate(mail_nodes.smtp)
    try:
        yield client, domain, gate, fault_settings
    finally:
        gate.remove()


def test_worker_sigkilled_mid_converge_resumes_and_applies(
    prepared, mail_nodes: MailNodes, tmp_path
) -> None:
    client, domain, gate, env = prepared
    with stack(tmp_path, env) as (worker, _beat):
        stopped = stop_in_the_middle(mail_nodes, gate, client, domain)
        worker.kill()
        gate.open()
        worker.start()  # as systemd's Restart=always would
        wait_for(lambda: converged(mail_nodes), timeout=HEAL_BOUND, what="the fleet to heal")
    assert_changes_applied(mail_nodes)
    assert_jobs_true(mail_nodes.smtp_node, stopped)
    stopped.refresh_from_db()
    # Its process was gone on this host: the job itself ran again and succeeded.
    assert stopped.status == Job.SUCCEEDED and stopped.attempts >= 2, stopped.log


def test_pool_processes_killed_mid_converge_the_redelivered_task_resumes(
    prepared, mail_nodes: MailNodes, tmp_path
) -> None:
    client, domain, gate, env = prepared
    with stack(tmp_path, env) as (worker, _beat):
        stopped = stop_in_the_middle(mail_nodes, gate, client, domain)
        assert worker.kill_pool()  # as the OOM killer does; the main process lives
        gate.open()
        wait_for(lambda: converged(mail_nodes), timeout=HEAL_BOUND, what="the fleet to heal")
    assert_changes_applied(mail_nodes)
    stopped.refresh_from_db()
    assert stopped.status == Job.SUCCEEDED and stopped.attempts >= 2, stopped.log
    assert_jobs_true(mail_nodes.smtp_node, stopped)


def test_sshd_killed_mid_converge_the_node_converges_once_it_is_back(
    prepared, mail_nodes: MailNodes, tmp_path
) -> None:
    client, domain, gate, env = prepared
    with stack(tmp_path, env) as (_worker, _beat):
        stopped = stop_in_the_middle(mail_nodes, gate, client, domain)
        kill_sshd(mail_nodes.smtp)
        gate.open()
        # The converge fails (connection lost, then refused); the node stays dirty.
        wait_for(
            lambda: NodeConvergeState.objects.filter(
                node=mail_nodes.smtp_node, failures__gte=1
            ).exists(),
            timeout=60,
            what="the failed converge to be recorded",
        )
        state = NodeConvergeState.objects.get(node=mail_nodes.smtp_node)
        assert state.desired_generation > state.applied_generation
        assert state.last_error and "Traceback" not in state.last_error
        start_sshd(mail_nodes.smtp)
        wait_for(lambda: converged(mail_nodes), timeout=HEAL_BOUND, what="the fleet to heal")
    assert_changes_applied(mail_nodes)
    assert_jobs_true(mail_nodes.smtp_node, stopped)
    state = NodeConvergeState.objects.get(node=mail_nodes.smtp_node)
    assert state.failures == 0 and state.last_error == ""


def test_a_change_made_while_the_worker_is_dead_is_applied_once_it_is_back(
    prepared, mail_nodes: MailNodes, tmp_path
) -> None:
    client, domain, _gate, env = prepared
    with stack(tmp_path, env) as (worker, _beat):
        worker.kill()
        make_changes(client, domain)
        state = NodeConvergeState.objects.get(node=mail_nodes.smtp_node)
        assert state.desired_generation > state.applied_generation  # the intent is durable
        worker.start()
        wait_for(lambda: converged(mail_nodes), timeout=HEAL_BOUND, what="the fleet to heal")
    assert_changes_applied(mail_nodes)


def test_a_converge_requested_after_a_restart_is_not_coalesced_into_the_dead_one(
    prepared, mail_nodes: MailNodes, tmp_path
) -> None:
    client, domain, gate, env = prepared
    with stack(tmp_path, env) as (worker, _beat):
        stop_in_the_middle(mail_nodes, gate, client, domain)
        worker.kill()
        gate.open()
        worker.start()
        response = token_client(Cast_holder.cast.sub_admin).post(
            reverse("node-converge", args=[mail_nodes.smtp_node.pk]), {}, format="json"
        )
        assert response.status_code == 202, response.content
        asked = Job.objects.get(pk=response.json()["id"])
        wait_for(
            lambda: Job.objects.filter(pk=asked.pk, status__in=Job.FINISHED).exists(),
            timeout=HEAL_BOUND,
            what="the requested converge to finish",
        )
        asked.refresh_from_db()
        assert asked.status == Job.SUCCEEDED, asked.error
        if asked.result.get("coalesced"):
            # Coalescing is right only into a converge that is alive (the dead one resumed
            # by the reconciler, or a new one): that holder must finish the work itself.
            holder = int(asked.result["into"].removeprefix("job:"))
            wait_for(
                lambda: Job.objects.filter(pk=holder, status__in=Job.FINISHED).exists(),
                timeout=HEAL_BOUND,
                what="the converge it coalesced into to finish",
            )
            assert Job.objects.get(pk=holder).status == Job.SUCCEEDED, asked.log
        wait_for(lambda: converged(mail_nodes), timeout=HEAL_BOUND, what="the fleet to heal")
    assert_changes_applied(mail_nodes)


def test_a_converge_whose_message_the_broker_lost_is_dispatched_again(
    prepared, mail_nodes: MailNodes, tmp_path
) -> None:
    from ums.celery import app

    client, domain, _gate, env = prepared
    with stack(tmp_path, env) as (worker, _beat):
        worker.kill()
        make_changes(client, domain)
        assert app.control.purge()  # the fault: the queued converges are gone
        worker.start()
        wait_for(lambda: converged(mail_nodes), timeout=HEAL_BOUND, what="the fleet to heal")
    assert_changes_applied(mail_nodes)
