"""The express step for new mailboxes, on real nodes (tests/converge/conftest.py).

* a mailbox created through the API has its entries inserted into the relaying SMTP
  node's live recipient tables before the converge builds its desired state; the
  converge that follows leaves the node exactly as a full render (nothing to change);
* the IMAP node, which delivers, gets no express entries (its delivery agent must know
  the mailbox first);
* the incremental path diffs against what a table holds, not against its source: a key
  only the ``.db`` has (an express entry whose mailbox is gone, a hand edit) is removed.
"""

from __future__ import annotations

import pytest

from deploy import dirty
from tests.fixtures import Cast
from ums.joblog import translate_log

from .conftest import MailNodes
from .test_courier_access import add_mailbox
from .test_incremental import last_converge, postmap_query, rcpt
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


def test_a_new_mailbox_is_accepted_before_the_converge_builds_its_state(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    Cast_holder.cast = cast
    client, domain = setup_mail(cast)
    carol = f"carol@{DOMAIN}"
    assert rcpt(mail_nodes, carol) != 250

    add_mailbox(client, domain, "carol")
    assert_jobs_succeeded()
    log = translate_log(last_converge(mail_nodes.smtp_node).log, "en")
    assert "express: 1 entry for 1 new mailbox(es) live in virtual_mailboxes" in log, log
    # Before the converge read the whole tree ("N domain(s), M mailbox(es); services").
    assert log.index("express: ") < log.index(" mailbox(es); services")
    assert rcpt(mail_nodes, carol) == 250
    assert postmap_query(mail_nodes, "virtual_mailboxes", carol) == f"{DOMAIN}/carol/Maildir/"
    send(mail_nodes, carol, "marker-express")
    wait_for_message(mail_nodes, "carol", "marker-express")

    # The node that delivers waits for its converge.
    assert "express:" not in last_converge(mail_nodes.imap_node).log
    # The converge kept the entry: a full render finds nothing left to change.
    for node in (mail_nodes.smtp_node, mail_nodes.imap_node):
        assert converge_now(node)["changed"] == {}


def test_an_entry_only_the_table_holds_is_removed_by_the_incremental_path(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    Cast_holder.cast = cast
    client, domain = setup_mail(cast)
    ghost = f"ghost@{DOMAIN}"
    # What an express entry of a mailbox deleted meanwhile leaves: a key in the live
    # .db that no source has.
    mail_nodes.smtp.exec_in_node(
        ["postmap", "-i", "-r", "hash:/etc/postfix/virtual_mailboxes"],
        input=f"{ghost}\t{DOMAIN}/ghost/Maildir/\n",
    )
    assert rcpt(mail_nodes, ghost) == 250

    add_mailbox(client, domain, "dave")
    assert_jobs_succeeded()
    job = last_converge(mail_nodes.smtp_node)
    assert "postfix" in job.result["incremental"], job.log
    assert postmap_query(mail_nodes, "virtual_mailboxes", ghost) == ""
    assert rcpt(mail_nodes, ghost) != 250
    assert rcpt(mail_nodes, f"dave@{DOMAIN}") == 250


def test_express_entries_of_a_deleted_mailbox_are_not_added(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    from mail.models import Mailbox

    Cast_holder.cast = cast
    client, domain = setup_mail(cast)
    gone = add_mailbox(client, domain, "gone")
    assert_jobs_succeeded()
    response = client.delete(f"/api/v1/mail/mailboxes/{gone}/")
    assert response.status_code in (200, 204), response.content
    assert_jobs_succeeded()
    assert not Mailbox.objects.filter(pk=gone).exists()
    # A note that outlived its mailbox (created and deleted before the node converged).
    dirty.remember_new_mailboxes(mail_nodes.smtp_node.pk, [gone])
    result = converge_now(mail_nodes.smtp_node)
    assert result["changed"] == {}
    job = last_converge(mail_nodes.smtp_node)
    assert "express:" not in job.log
    assert rcpt(mail_nodes, f"gone@{DOMAIN}") != 250


def test_notes_of_new_mailboxes_are_taken_once_and_bounded() -> None:
    node_id = 4242
    dirty.forget([node_id])
    dirty.remember_new_mailboxes(node_id, [3, 1])
    dirty.remember_new_mailboxes(node_id, [2, 3])
    assert dirty.take_new_mailboxes(node_id) == [1, 2, 3]
    assert dirty.take_new_mailboxes(node_id) == []
    # An import's worth: the node just converges.
    dirty.remember_new_mailboxes(node_id, range(dirty.EXPRESS_LIMIT + 1))
    dirty.remember_new_mailboxes(node_id, [7])
    assert dirty.take_new_mailboxes(node_id) == []
