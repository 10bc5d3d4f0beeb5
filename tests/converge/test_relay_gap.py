"""A mailbox the SMTP node knows before its IMAP node does: mail waits, never bounces.

The SMTP and IMAP nodes converge as separate jobs, so for a moment after a mailbox is
created the SMTP node may accept mail the IMAP node still refuses as an unknown user.
The relay transport to our own IMAP nodes turns that refusal into a deferral, and the
IMAP node's converge has the SMTP node re-queue exactly those messages.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.fixtures import Cast
from ums.joblog import translate_log

from .conftest import MailNodes
from .test_mail_flow import DOMAIN, converge_now, send, setup_mail, wait_for_message

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


def smtp_queue(nodes: MailNodes) -> list[dict]:
    out = nodes.smtp.exec_in_node(["postqueue", "-j"]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_mail_for_a_mailbox_the_imap_node_does_not_know_yet_is_deferred_then_delivered(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    from servers.models import Node
    from ums.models import Job

    from .test_mail_flow import Cast_holder

    Cast_holder.cast = cast
    setup_mail(cast)
    # The IMAP node "has not converged yet": its maps lose alice.
    maps = mail_nodes.imap.path("/etc/postfix/virtual_mailboxes")
    maps.write_text(
        "".join(line for line in maps.read_text().splitlines(True) if "alice@" not in line)
    )
    mail_nodes.imap.exec_in_node(["postmap", "hash:/etc/postfix/virtual_mailboxes"])

    send(mail_nodes, f"alice@{DOMAIN}", "marker-gap")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        deferred = [
            m
            for m in smtp_queue(mail_nodes)
            if m.get("queue_name") == "deferred"
            and m.get("sender") == "bob@outside.test"
            and m["recipients"][0]["address"] == f"alice@{DOMAIN}"
        ]
        if deferred:
            break
        time.sleep(0.5)
    assert deferred, "the IMAP node's refusal must leave the message queued on the SMTP node"
    reason = deferred[0]["recipients"][0].get("delay_reason", "")
    assert "unknown" in reason.lower(), reason
    log = mail_nodes.smtp.path("/var/spool/postfix/maillog").read_text()
    assert "status=bounced" not in log

    # Another SMTP node of the tree that is down: skipped after one try, logged.
    down = Node.objects.get(pk=mail_nodes.smtp_node.pk)
    down.pk = None
    down.hostname, down.ssh_port = "down-smtp.ums.test", 1
    down.save()

    # The IMAP node converges and has the SMTP node re-queue what it deferred: delivered
    # at once, not after Postfix's backoff (300 s by default, longer than this wait).
    converge_now(mail_nodes.imap_node)
    job = Job.objects.filter(kind="node.converge", object_id=str(mail_nodes.imap_node.pk)).latest(
        "pk"
    )
    log = translate_log(job.log, "en")
    assert f"{mail_nodes.smtp_node.hostname}: re-queued 1 message(s)" in log, log
    assert "down-smtp.ums.test: deferred mail not re-queued" in log, log
    assert "marker-gap" in wait_for_message(mail_nodes, "alice", "marker-gap", timeout=60)


def test_only_deferred_messages_the_imap_node_refused_are_picked() -> None:
    from deploy.relay_retry import refused_by

    lines = [
        {"queue_name": "deferred", "queue_id": "4AbCdEf12", "recipients": [
            {"address": "a@x.test", "delay_reason": "host 10.0.0.9[10.0.0.9] said: 550 5.1.1"}]},
        {"queue_name": "deferred", "queue_id": "5AbCdEf12", "recipients": [
            {"address": "b@y.test", "delay_reason": "host mx.other[192.0.2.1] said: 451"}]},
        {"queue_name": "active", "queue_id": "6AbCdEf12", "recipients": [
            {"address": "c@x.test", "delay_reason": "host 10.0.0.9[10.0.0.9] said: 550"}]},
        {"queue_name": "deferred", "queue_id": "7Ab;rm -rf", "recipients": [
            {"address": "d@x.test", "delay_reason": "host 10.0.0.9[10.0.0.9] said: 550"}]},
        {"queue_name": "deferred", "queue_id": "8AbCdEf12", "recipients": [
            {"address": "e@x.test", "delay_reason": "host 10.0.0.99[10.0.0.99] said: 550"}]},
    ]  # fmt: skip
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n"
    assert refused_by(text, "10.0.0.9") == ["4AbCdEf12"]
