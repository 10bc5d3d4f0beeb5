"""Spam hold end to end on real nodes: real SpamAssassin holds GTUBE on the SMTP node, the
controller ingests it, the sheet-format query returns it, the portal shows it escaped,
a release through the API delivers it into the Maildir (read over IMAPS) and a second
administrator's release is told who handled it.
"""

from __future__ import annotations

import imaplib
import time
from email.message import EmailMessage

import pytest
from django.test import Client
from django.urls import reverse

from spamhold import ingest
from spamhold.models import HeldMessage, Reason, Status
from tests.converge.conftest import MailNodes
from tests.converge.test_filtering import (  # noqa: F401  (fixtures)
    GTUBE,
    filter_nodes,
    filter_services,
    held_with,
    needs_filters,
    send_when_ready,
    wait_for_scanners,
)
from tests.converge.test_mail_flow import DOMAIN, PASSWORD, maildir, setup_mail, tls
from tests.fixtures import Cast, token_client
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401

pytestmark = [needs_filters, pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

SCRIPT = "<script>alert(1)</script>"
SHEET_BODY = {
    "startTime": 0,
    "endTime": 2147483647,
    "fromDomain": "spammer.test",
    "status": "ONHOLD",
}


def gtube_message(marker: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "offers@spammer.test"
    msg["To"] = f"alice@{DOMAIN}"
    msg["Subject"] = f"{marker} {SCRIPT}"
    msg["Message-ID"] = f"<{marker}@spammer.test>"
    msg.set_content(f"Great offer\n{GTUBE}\n")
    msg.add_attachment(b"just text", maintype="text", subtype="plain", filename=f"{SCRIPT}.txt")
    return msg.as_bytes()


def delivered_over_imap(nodes: MailNodes, marker: str, timeout: float = 120) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        box = maildir(nodes, "alice")
        if box.is_dir() and any(marker in p.read_text(errors="replace") for p in box.iterdir()):
            break
        time.sleep(0.5)
    with imaplib.IMAP4_SSL(nodes.imap.address, 993, ssl_context=tls()) as imap:
        imap.login(f"alice@{DOMAIN}", PASSWORD)
        imap.select("INBOX")
        _typ, data = imap.search(None, "SUBJECT", marker)
        ids = data[0].split()
        assert ids, f"{marker} not in alice's INBOX"
        _typ, fetched = imap.fetch(ids[-1], "(RFC822)")
        return fetched[0][1]


def test_gtube_is_held_ingested_queried_shown_escaped_and_released_once(
    cast: Cast,
    filter_nodes: MailNodes,  # noqa: F811
) -> None:
    nodes = filter_nodes
    setup_mail(cast)
    wait_for_scanners(nodes)
    send_when_ready(nodes, "offers@spammer.test", f"alice@{DOMAIN}", gtube_message("mk-e2e"))
    queue_id, _headers = held_with(nodes, "mk-e2e")

    result = ingest.ingest_node(nodes.smtp_node)
    assert result.new == 1
    held = HeldMessage.objects.get(queue_id=queue_id)
    assert held.reason == Reason.SPAM and "GTUBE" in held.spam_rules
    assert held.customer is not None and held.customer.path.startswith(cast.government.path)

    # The product sheet's query, as written, scoped to the caller.
    client = token_client(cast.sub_admin)
    answer = client.post(reverse("spamhold-query"), SHEET_BODY, format="json")
    assert answer.status_code == 200, answer.content
    records = answer.json()["results"]
    assert [r["id"] for r in records] == [held.pk]
    record = records[0]
    assert record["fromEmail"] == "offers@spammer.test"
    assert record["toEmail"] == f"alice@{DOMAIN}"
    assert record["status"] == "ONHOLD" and "mk-e2e" in record["subject"]
    assert isinstance(record["timestamp"], float) and isinstance(record["expiry"], int)
    sibling = token_client(cast.sibling_admin)
    assert (
        sibling.post(reverse("spamhold-query"), SHEET_BODY, format="json").json()["results"] == []
    )

    # The portal's content fragment fetches the real message from the node: escaped.
    portal = Client()
    portal.force_login(cast.sub_admin)
    page = portal.get(
        reverse("spamhold:content", args=[held.pk]), headers={"X-Requested-With": "fetch"}
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert SCRIPT not in html

    # Release through the API: delivered once; a second administrator is told who.
    released = client.post(
        reverse("spamhold-message-release-one", args=[held.pk]), {}, format="json"
    )
    # Accepted at once (the node acts in the request's job), then delivered.
    assert released.status_code == 202, released.content
    assert released.json()["pending"] == [held.pk]
    text = delivered_over_imap(nodes, "mk-e2e")
    assert GTUBE.encode() in text
    second = token_client(cast.root_admin).post(
        reverse("spamhold-message-release-one", args=[held.pk]), {}, format="json"
    )
    assert second.status_code == 409
    assert cast.sub_admin.full_name in second.json()["message"]
    held.refresh_from_db()
    assert held.status == Status.RELEASED
    assert queue_id not in nodes.smtp.exec_in_node(["postqueue", "-j"]).stdout
