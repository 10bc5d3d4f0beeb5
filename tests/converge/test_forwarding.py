"""Forwards (with and without a copy), distribution groups and alias domains delivered
end to end on real nodes; the catch-all is proved in test_mail_flow.py and loops are
refused before saving (tests/mail/test_forwarding_loops.py)."""

from __future__ import annotations

import pytest

from mail import actions
from mail.models import Domain
from tests.fixtures import Cast

from .conftest import MailNodes
from .test_courier_access import add_mailbox
from .test_mail_flow import (
    DOMAIN,
    assert_jobs_succeeded,
    maildir,
    send,
    setup_mail,
    wait_for_message,
)

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


def test_forwards_groups_and_alias_domains_reach_the_right_mailboxes(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    nodes = mail_nodes
    client, domain = setup_mail(cast)  # alice
    for local in ("carol", "erin"):
        add_mailbox(client, domain, local)
    add_mailbox(client, domain, "bob", forwardTo=[f"carol@{DOMAIN}"], forwardKeepCopy=True)
    add_mailbox(client, domain, "dave", forwardTo=[f"erin@{DOMAIN}"], forwardKeepCopy=False)
    response = client.post(
        "/api/v1/mail/aliases/",
        {
            "domain": domain["id"],
            "localPart": "team",
            "kind": "group",
            "targets": [f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"erin@{DOMAIN}"],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    actions.create_domain_alias(
        actor=cast.sub_admin, domain=Domain.objects.get(pk=domain["id"]), name="other.example"
    )
    assert_jobs_succeeded()

    # A forward that keeps a copy: both mailboxes have it.
    send(nodes, f"bob@{DOMAIN}", "m-keep")
    wait_for_message(nodes, "bob", "m-keep")
    wait_for_message(nodes, "carol", "m-keep")
    # Without a copy: only the target has it.
    send(nodes, f"dave@{DOMAIN}", "m-nocopy")
    wait_for_message(nodes, "erin", "m-nocopy")
    dave = maildir(nodes, "dave")
    assert not [p for p in dave.iterdir() if "m-nocopy" in p.read_text(errors="replace")]
    # A group reaches every member, and a member's own forward (bob -> carol) too.
    send(nodes, f"team@{DOMAIN}", "m-group")
    for local in ("alice", "bob", "erin", "carol"):
        wait_for_message(nodes, local, "m-group")
    # The alias domain: the same local part at the other name reaches the mailbox, and a
    # group there is the same group.
    send(nodes, "alice@other.example", "m-aliasdomain")
    wait_for_message(nodes, "alice", "m-aliasdomain")
    send(nodes, "team@other.example", "m-aliasgroup")
    for local in ("alice", "bob", "erin"):
        wait_for_message(nodes, local, "m-aliasgroup")
