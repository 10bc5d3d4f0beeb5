"""Node actions on the real daemons of namespaced nodes (no systemd: the controller is
their init, see deploy/node_daemons.py): restart of one service, reboot, shutdown and
start, and a namespace that lost every process. Each time the pids change and the
daemons serve again with the files converge installed last."""

from __future__ import annotations

import imaplib
import re
import smtplib
import socket

import pytest
from django.urls import reverse

from deploy.actions import start_node_action
from tests.fixtures import Cast, token_client
from ums.models import Job

from .conftest import MailNodes
from .test_mail_flow import DOMAIN, PASSWORD, send, setup_mail, tls, wait_for_message

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


def pids_named(tnode, *names: str) -> set[int]:
    found = set()
    for pid in tnode.processes():
        try:
            with open(f"/proc/{pid}/comm") as handle:
                if handle.read().strip() in names:
                    found.add(pid)
        except OSError:
            continue
    return found


def run_action(cast: Cast, node, name: str, service: str | None = None) -> Job:
    job = start_node_action(actor=cast.sub_admin, node=node, name=name, service=service)
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, f"{name}: {job.error}\n{job.log}"
    return job


def imaps_login(nodes: MailNodes, local: str) -> None:
    with imaplib.IMAP4_SSL(nodes.imap.address, 993, ssl_context=tls(), timeout=20) as imap:
        imap.login(f"{local}@{DOMAIN}", PASSWORD)
        imap.select("INBOX")


def refused(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=3):
            return False
    except OSError:
        return True


def test_restart_reboot_shutdown_and_a_dead_namespace_act_on_the_real_daemons(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    nodes = mail_nodes
    client, domain = setup_mail(cast)

    # Restart of one service: Postfix's master is replaced and answers SMTP again.
    master = pids_named(nodes.smtp, "master")
    assert master
    job = run_action(cast, nodes.smtp_node, "restart_service", "postfix")
    assert set(job.result["stopped"]) == master
    new_master = pids_named(nodes.smtp, "master")
    assert new_master and not new_master & master
    assert set(job.result["started"]) == new_master
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=20) as smtp:
        assert smtp.noop()[0] == 250

    # A unit name (as on systemd) reaches the same service: Courier's listeners restart.
    courier = pids_named(nodes.imap, "couriertcpd", "authdaemond")
    run_action(cast, nodes.imap_node, "restart_service", "courier-imap-ssl")
    after = pids_named(nodes.imap, "couriertcpd", "authdaemond")
    assert after and not after & courier
    imaps_login(nodes, "alice")

    # The last installed configuration: a mailbox added just before the reboot.
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": domain["id"], "localPart": "carol", "password": PASSWORD},
        format="json",
    )
    assert response.status_code == 201, response.content
    before = {t.name: t.processes() for t in (nodes.smtp, nodes.imap)}
    for node in (nodes.smtp_node, nodes.imap_node):
        job = run_action(cast, node, "reboot")
        assert not job.result["systemd"] and not job.result["failed"]
        assert job.result["stopped"] and job.result["started"]
    for tnode in (nodes.smtp, nodes.imap):
        daemons = pids_named(tnode, "master", "couriertcpd", "authdaemond", "dovecot")
        assert daemons and not daemons & before[tnode.name], tnode.name
    imaps_login(nodes, "carol")
    send(nodes, f"carol@{DOMAIN}", "marker-after-reboot")
    wait_for_message(nodes, "carol", "marker-after-reboot")

    # Shutdown stops the daemons (sshd stays); "start all services" brings them back.
    run_action(cast, nodes.imap_node, "shutdown")
    assert not pids_named(nodes.imap, "couriertcpd", "authdaemond", "dovecot")
    assert refused(nodes.imap.address, 993)
    run_action(cast, nodes.imap_node, "start_services")
    imaps_login(nodes, "carol")

    # A namespace that lost every process (its sshd included), as after a power cut: the
    # harness starts sshd again (the node's own start-up), the controller its daemons.
    nodes.imap.restart()
    assert not pids_named(nodes.imap, "couriertcpd", "authdaemond", "dovecot")
    assert refused(nodes.imap.address, 993)
    job = run_action(cast, nodes.imap_node, "start_services")
    assert set(job.result["started"]) == {"courier", "lda", "postfix"}  # delivery: postfix
    imaps_login(nodes, "alice")
    send(nodes, f"alice@{DOMAIN}", "marker-after-power-cut")
    wait_for_message(nodes, "alice", "marker-after-power-cut")
    # What the daemons run is what converge installed: a converge finds nothing to do.
    response = token_client(cast.sub_admin).post(
        reverse("node-converge", args=[nodes.imap_node.pk]), {"dryRun": True}, format="json"
    )
    assert response.status_code == 202, response.content
    converge_job = Job.objects.get(pk=response.json()["id"])
    assert converge_job.result["changed"] == {}, converge_job.result


def test_a_reboot_cut_off_between_stop_and_start_is_healed_by_start_services(
    cast: Cast, mail_nodes: MailNodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's sshd dies after the reboot stopped the daemons and before it started
    them (the controller's connection lost mid-step): the job fails with the reason,
    nothing is half-started, and "start all services" (idempotent) brings every daemon
    back from the live files once the node answers again."""
    from deploy.services.postfix import SERVICE as POSTFIX

    from .test_faults import kill_sshd

    nodes = mail_nodes
    setup_mail(cast)
    original = type(POSTFIX).stop

    def stop_then_lose_the_node(self, conn):  # a test-only fault: runs the real stop first
        stopped = original(self, conn)
        kill_sshd(nodes)
        return stopped

    monkeypatch.setattr(type(POSTFIX), "stop", stop_then_lose_the_node)
    job = start_node_action(actor=cast.sub_admin, node=nodes.smtp_node, name="reboot")
    job.refresh_from_db()
    # The connector's error, by class name (the connection dropped under the job).
    assert job.status == Job.FAILED, job.log
    assert re.match(r"^[A-Za-z]+: ", job.error), job.error
    monkeypatch.undo()
    assert not pids_named(nodes.smtp, "master")
    assert refused(nodes.smtp.address, 25)
    nodes.smtp.start()  # the node's own sshd is back (as after its own restart)
    job = run_action(cast, nodes.smtp_node, "start_services")
    assert "postfix" in job.result["started"] and job.result["started"]["postfix"]
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=20) as smtp:
        assert smtp.noop()[0] == 250
    send(nodes, f"alice@{DOMAIN}", "marker-after-cut")
    wait_for_message(nodes, "alice", "marker-after-cut")
