"""Folders a Sieve filter creates are subscribed in Courier; DSN requests are honoured.

On real daemons (Courier-IMAP, Dovecot LDA with Pigeonhole, Postfix on an SMTP and an
IMAP node): a raw Sieve script's ``fileinto :create`` makes a folder that Courier's
``LSUB`` lists, a subscription the user removes stays removed, and a message submitted
from a hosted mailbox with ``NOTIFY=SUCCESS`` / ``NOTIFY=FAILURE`` brings the sender a
delivery status notification (``NOTIFY=NEVER`` none).
"""

from __future__ import annotations

import imaplib
import smtplib
from email.message import EmailMessage

import pytest
from django.urls import reverse

from tests.fixtures import Cast

from .conftest import MailNodes
from .test_delivery import (
    add_mailbox,
    box,
    mailbox_id,
    messages,
    queue_empty,
    send,
    wait_for,
    wait_until,
)
from .test_mail_flow import DOMAIN, PASSWORD, assert_jobs_succeeded, setup_mail, tls

SCRIPT = (
    'require ["fileinto", "mailbox"];\n'
    'if header :contains "subject" "newsletter" { fileinto :create "News"; stop; }\n'
)


def subscribed(nodes: MailNodes, local: str) -> list[bytes]:
    with imaplib.IMAP4_SSL(nodes.imap.address, 993, ssl_context=tls()) as imap:
        imap.login(f"{local}@{DOMAIN}", PASSWORD)
        typ, listing = imap.lsub()
        assert typ == "OK", listing
        return [line.rsplit(b" ", 1)[-1].strip(b'"') for line in listing if line]


def submit(
    nodes: MailNodes, sender: str, to: str, subject: str, notify: str, body: str = ""
) -> None:
    """Through submission (587) on the SMTP node, as the hosted mailbox's user would."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message.set_content(body or f"hello {subject}\n")
    with smtplib.SMTP(nodes.smtp.address, 587, timeout=60) as smtp:
        smtp.starttls(context=tls())
        smtp.login(sender, PASSWORD)
        assert smtp.has_extn("dsn"), "submission does not offer DSN"
        smtp.send_message(message, rcpt_options=[f"NOTIFY={notify}"])


@pytest.mark.nodes
@pytest.mark.django_db(transaction=True)
def test_sieve_created_folder_is_subscribed_in_courier(cast: Cast, mail_nodes: MailNodes) -> None:
    client, _domain = setup_mail(cast)
    # A subscription of the user's own, made in Courier, survives the merge.
    with imaplib.IMAP4_SSL(mail_nodes.imap.address, 993, ssl_context=tls()) as imap:
        imap.login(f"alice@{DOMAIN}", PASSWORD)
        assert imap.create("INBOX.Mine")[0] == "OK"
        assert imap.subscribe("INBOX.Mine")[0] == "OK"
    response = client.post(
        reverse("mail-sieve-script-list"),
        {"mailbox": mailbox_id(f"alice@{DOMAIN}"), "name": "News", "mode": "raw", "script": SCRIPT},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert_jobs_succeeded()

    send(mail_nodes, "list@outside.test", f"alice@{DOMAIN}", "Weekly newsletter marker-sub-1")
    wait_for(mail_nodes, "alice", "marker-sub-1", folder="News")
    lsub = subscribed(mail_nodes, "alice")
    assert b"INBOX.News" in lsub and b"INBOX.Mine" in lsub, lsub
    maildir = box(mail_nodes, "alice")
    assert not (maildir / "subscriptions").exists()
    assert not list(maildir.glob("subscriptions.ums-merging.*"))

    # Unsubscribed by the user: filing into the existing folder does not subscribe it again.
    with imaplib.IMAP4_SSL(mail_nodes.imap.address, 993, ssl_context=tls()) as imap:
        imap.login(f"alice@{DOMAIN}", PASSWORD)
        assert imap.unsubscribe("INBOX.News")[0] == "OK"
    send(mail_nodes, "list@outside.test", f"alice@{DOMAIN}", "Newsletter again marker-sub-2")
    wait_for(mail_nodes, "alice", "marker-sub-2", folder="News")
    lsub = subscribed(mail_nodes, "alice")
    assert b"INBOX.News" not in lsub and b"INBOX.Mine" in lsub, lsub

    # A merge killed half-way (Dovecot's list renamed aside, Courier's not yet written)
    # is finished by the next delivery.
    (maildir / "subscriptions.ums-merging.1").write_text("V\t2\n\nLeftover\n")
    send(mail_nodes, "friend@outside.test", f"alice@{DOMAIN}", "Hello marker-sub-3")
    wait_for(mail_nodes, "alice", "marker-sub-3")
    wait_until(
        mail_nodes,
        "the leftover merge",
        lambda: not (maildir / "subscriptions.ums-merging.1").exists(),
    )
    assert b"INBOX.Leftover" in subscribed(mail_nodes, "alice")

    # A second active script replaces the first on the node; activating the first again
    # brings it back. The node only ever holds the active one.
    news = response.json()["id"]
    other = (
        'require ["fileinto"];\n'
        'if header :contains "subject" "newsletter" { fileinto "Elsewhere"; }\n'
    )
    response = client.post(
        reverse("mail-sieve-script-list"),
        {"mailbox": mailbox_id(f"alice@{DOMAIN}"), "name": "Other", "mode": "raw", "script": other},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert_jobs_succeeded()
    live = mail_nodes.imap.path(f"/etc/ums-lda/sieve/{DOMAIN}/alice/user.sieve")
    assert live.read_text() == other
    send(mail_nodes, "list@outside.test", f"alice@{DOMAIN}", "newsletter marker-sub-4")
    wait_for(mail_nodes, "alice", "marker-sub-4", folder="Elsewhere")
    assert b"INBOX.Elsewhere" in subscribed(mail_nodes, "alice")
    response = client.post(reverse("mail-sieve-script-activate", args=[news]))
    assert response.status_code == 200, response.content
    assert_jobs_succeeded()
    assert live.read_text() == SCRIPT


@pytest.mark.nodes
@pytest.mark.django_db(transaction=True)
def test_delivery_status_notifications_on_request(cast: Cast, mail_nodes: MailNodes) -> None:
    client, domain = setup_mail(cast)
    add_mailbox(client, domain, "bob")
    add_mailbox(client, domain, "small", quotaMb=1)
    assert_jobs_succeeded()
    bob = f"bob@{DOMAIN}"

    # Success: the sender gets Postfix's "Successful Mail Delivery Report".
    submit(mail_nodes, bob, f"alice@{DOMAIN}", "marker-dsn-ok", "SUCCESS,FAILURE")
    wait_for(mail_nodes, "alice", "marker-dsn-ok")
    report = wait_for(mail_nodes, "bob", "marker-dsn-ok")
    assert "Successful Mail Delivery Report" in report, report[:3000]
    assert "report-type=delivery-status" in report, report[:3000]
    assert "Action: delivered" in report, report[report.find("Reporting-MTA") :][:1500]
    assert f"Final-Recipient: rfc822; alice@{DOMAIN}" in report, report[:3000]

    # Failure after acceptance (the recipient's quota): a bounce with the DSN; with
    # NOTIFY=NEVER the same failure is silent.
    big = ("x" * 76 + "\n") * 20_000  # ~1.5 MB
    submit(mail_nodes, bob, f"small@{DOMAIN}", "marker-dsn-never", "NEVER", body=big)
    submit(mail_nodes, bob, f"small@{DOMAIN}", "marker-dsn-fail", "FAILURE", body=big)
    bounce = wait_for(mail_nodes, "bob", "marker-dsn-fail")
    assert "Undelivered Mail Returned to Sender" in bounce, bounce[:3000]
    assert "report-type=delivery-status" in bounce and "Action: failed" in bounce, bounce[:4000]
    assert "Status: 5." in bounce, bounce[:4000]
    wait_until(mail_nodes, "an empty queue on the IMAP node", lambda: queue_empty(mail_nodes))
    assert not [t for t in messages(mail_nodes, "bob") if "marker-dsn-never" in t]
    assert not [t for t in messages(mail_nodes, "small") if "marker-dsn-" in t]

    # Every listener offers DSN: the MX (25) and SMTPS (465) as well as submission.
    with smtplib.SMTP(mail_nodes.smtp.address, 25, timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("dsn")
    with smtplib.SMTP_SSL(mail_nodes.smtp.address, 465, timeout=30, context=tls()) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("dsn")

    # An unknown hosted address is refused while the client is still connected: the
    # sender's program shows the error at once, so no bounce is needed or sent.
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        submit(mail_nodes, bob, f"nobody-here@{DOMAIN}", "marker-dsn-unknown", "FAILURE")
