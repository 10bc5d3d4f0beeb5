"""The fast path for map-only Postfix changes, on real nodes (tests/converge/conftest.py).

* a mailbox added through the API reaches the SMTP node's Postfix by ``postmap -i`` on a
  copy of each changed ``.db`` (no full recompile, no reload) and goes live without
  waiting for Courier; the address answers RCPT 250 and mail is delivered;
* removing an alias removes its key; a full converge afterwards finds nothing to change
  (the live sources are byte-identical to a full render);
* a live source edited on the node (even recompiled there) is not trusted: the full path
  runs and the node ends correct.
"""

from __future__ import annotations

import smtplib
from typing import Any

import pytest
from django.urls import reverse

from tests.fixtures import Cast
from tests.harness.worker import wait_for
from ums.joblog import translate_log

from .conftest import MailNodes
from .test_courier_access import add_mailbox
from .test_mail_flow import (
    DOMAIN,
    Cast_holder,
    assert_jobs_succeeded,
    converge_now,
    send,
    setup_mail,
    wait_for_message,
)

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

MASTER_PID = "/var/spool/postfix/pid/master.pid"


def rcpt(nodes: MailNodes, address: str) -> int:
    """The SMTP node's answer to RCPT TO for ``address`` in a fresh session."""
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=30) as smtp:
        smtp.ehlo("probe.example")
        smtp.mail("probe@outside.test")
        code, _message = smtp.rcpt(address)
        return code


def last_converge(node: Any) -> Any:
    from ums.models import Job

    job = Job.objects.filter(kind="node.converge", object_id=str(node.pk)).order_by("-pk").first()
    assert job is not None
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    return job


def master_pid(nodes: MailNodes) -> str:
    return nodes.smtp.path(MASTER_PID).read_text().strip()


def postmap_query(nodes: MailNodes, name: str, key: str) -> str:
    # The key travels on stdin, as converge does it.
    result = nodes.smtp.exec_in_node(
        ["postmap", "-q", "-", f"hash:/etc/postfix/{name}"], input=key + "\n", check=False
    )
    # postmap -q - answers "key<TAB>value" per key found.
    return result.stdout.strip().partition("\t")[2]


def test_map_only_changes_take_the_incremental_path(cast: Cast, mail_nodes: MailNodes) -> None:
    Cast_holder.cast = cast
    client, domain = setup_mail(cast)
    response = client.post(
        reverse("mail-alias-list"),
        {"domain": domain["id"], "localPart": "team", "targets": [f"alice@{DOMAIN}"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    alias_id = response.json()["id"]
    assert_jobs_succeeded()
    assert rcpt(mail_nodes, f"team@{DOMAIN}") == 250
    pid = master_pid(mail_nodes)
    carol = f"carol@{DOMAIN}"
    assert rcpt(mail_nodes, carol) != 250

    add_mailbox(client, domain, "carol")
    assert_jobs_succeeded()
    job = last_converge(mail_nodes.smtp_node)
    assert "postfix" in job.result["incremental"], job.log
    assert "postfix" in job.result["liveAlone"], job.log
    assert "incremental update built and verified" in job.log
    # A pipeline, slowest check first: Courier's makeuserdb (SASL logins) was running on
    # the node while the controller rendered Postfix's maps.
    log = translate_log(job.log, "en")
    assert log.index("courier: validating") < log.index("postfix: trying the incremental path")
    assert "courier" in job.result["changed"], job.log
    assert "/etc/postfix/main.cf" not in job.result["changed"]["postfix"]
    # Live without a reload: the master is the same process, the new key answers.
    assert rcpt(mail_nodes, carol) == 250
    assert master_pid(mail_nodes) == pid
    assert postmap_query(mail_nodes, "virtual_mailboxes", carol) == (f"{DOMAIN}/carol/Maildir/")
    send(mail_nodes, carol, "marker-incremental")
    wait_for_message(mail_nodes, "carol", "marker-incremental")
    # The IMAP node delivers: its Postfix keeps service order (after Courier), and it
    # may still use the incremental path.
    imap_job = last_converge(mail_nodes.imap_node)
    assert "postfix" not in imap_job.result["liveAlone"], imap_job.log

    # Removing an alias removes its key, still incrementally.
    response = client.delete(reverse("mail-alias-detail", args=[alias_id]))
    assert response.status_code in (200, 204), response.content
    assert_jobs_succeeded()
    job = last_converge(mail_nodes.smtp_node)
    assert "postfix" in job.result["incremental"], job.log
    assert postmap_query(mail_nodes, "virtual_aliases", f"team@{DOMAIN}") == ""
    assert rcpt(mail_nodes, f"team@{DOMAIN}") != 250
    assert master_pid(mail_nodes) == pid

    # Sources byte-identical to a full render: a converge finds nothing to change.
    for node in (mail_nodes.smtp_node, mail_nodes.imap_node):
        result = converge_now(node)
        assert result["changed"] == {}, result
    assert not [p for p in mail_nodes.smtp.path("/etc/postfix").iterdir() if "stage" in p.name]


def test_a_source_edited_on_the_node_forces_the_full_path(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    Cast_holder.cast = cast
    client, domain = setup_mail(cast)
    live = mail_nodes.smtp.path("/etc/postfix/virtual_mailboxes")
    evil = f"evil@{DOMAIN}"
    # Behind the controller's back, and recompiled, so the .db is not older than it:
    # only the recorded sha256 tells the source is not what converge installed.
    live.write_bytes(live.read_bytes() + f"{evil} {DOMAIN}/evil/Maildir/\n".encode())
    mail_nodes.smtp.exec_in_node(["postmap", "hash:/etc/postfix/virtual_mailboxes"])
    # An smtpd left idle by the converge's post-flight probe serves one more session with
    # the table it had open before it notices the change and exits (Postfix re-reads a
    # changed table between sessions), so the hand edit is live from the next session on.
    wait_for(lambda: rcpt(mail_nodes, evil) == 250, timeout=120, what="the hand edit to be live")

    add_mailbox(client, domain, "dave")
    assert_jobs_succeeded()
    job = last_converge(mail_nodes.smtp_node)
    assert "postfix" not in job.result["incremental"], job.log
    assert "/etc/postfix/virtual_mailboxes" in job.result["changed"]["postfix"]
    assert rcpt(mail_nodes, f"dave@{DOMAIN}") == 250
    assert rcpt(mail_nodes, evil) != 250
    result = converge_now(mail_nodes.smtp_node)
    assert result["changed"] == {}, result

    # A .db older than its source (edited, not recompiled) also forces the full path,
    # even though the recorded sha256 still matches after a touch-only edit. (A deletion:
    # a new mailbox's express entry would update the .db first.)
    from mail.models import Mailbox

    mail_nodes.smtp.exec_in_node(["touch", "/etc/postfix/virtual_mailboxes"])
    dave = Mailbox.objects.get(email=f"dave@{DOMAIN}")
    response = client.delete(reverse("mail-mailbox-detail", args=[dave.pk]))
    assert response.status_code in (200, 204), response.content
    assert_jobs_succeeded()
    job = last_converge(mail_nodes.smtp_node)
    assert "postfix" not in job.result["incremental"], job.log
    assert "older than its source" in job.log, job.log
    assert rcpt(mail_nodes, f"dave@{DOMAIN}") != 250
    result = converge_now(mail_nodes.smtp_node)
    assert result["changed"] == {}, result
