"""Per-mailbox SMTP access flags proved with real clients against namespaced nodes:
submission (587), SMTPS (465), "cannot send", and SMTP (port 25), which for a mailbox
means "accepts mail from other servers" (see README "Access flags"). Read-only and
cannot-delete are proved over IMAP in test_courier_access.py, IMAP/POP3 ports in
test_mail_flow.py."""

from __future__ import annotations

import smtplib

import pytest

from tests.fixtures import Cast

from .conftest import MailNodes
from .test_courier_access import add_mailbox, patch_mailbox
from .test_mail_flow import DOMAIN, PASSWORD, setup_mail, tls, wait_for_message

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

BODY = b"Subject: %s\r\n\r\nhello\r\n"


def submit(nodes: MailNodes, port: int, local: str, to: str, marker: str) -> None:
    """Log in as ``local`` on 587 (STARTTLS) or 465 (TLS) and send to ``to``."""
    if port == 465:
        smtp = smtplib.SMTP_SSL(nodes.smtp.address, 465, timeout=30, context=tls())
    else:
        smtp = smtplib.SMTP(nodes.smtp.address, 587, timeout=30)
        smtp.starttls(context=tls())
    with smtp:
        smtp.login(f"{local}@{DOMAIN}", PASSWORD)
        smtp.sendmail(f"{local}@{DOMAIN}", [to], BODY % marker.encode())


def test_submission_smtps_cannot_send_and_port_25_flags_are_enforced_by_postfix(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    nodes = mail_nodes
    client, domain = setup_mail(cast)  # alice: every flag at its default
    add_mailbox(client, domain, "sub", protocolAccess={"submission": "deny"})
    add_mailbox(client, domain, "tls", protocolAccess={"smtps": "deny"})
    add_mailbox(client, domain, "mute", canSend=False)
    add_mailbox(client, domain, "inner", protocolAccess={"smtp": "deny"})
    alice = f"alice@{DOMAIN}"

    # Submission denied: 587 refuses the sender after login, 465 still sends.
    with pytest.raises(smtplib.SMTPRecipientsRefused, match="Submission is disabled"):
        submit(nodes, 587, "sub", alice, "m-sub-587")
    submit(nodes, 465, "sub", alice, "m-sub-465")
    wait_for_message(nodes, "alice", "m-sub-465")
    # SMTPS denied: the other way round.
    with pytest.raises(smtplib.SMTPRecipientsRefused, match="SMTPS is disabled"):
        submit(nodes, 465, "tls", alice, "m-tls-465")
    submit(nodes, 587, "tls", alice, "m-tls-587")
    wait_for_message(nodes, "alice", "m-tls-587")
    # Cannot send: refused on both ports, with the reason; it still receives.
    for port in (587, 465):
        with pytest.raises(smtplib.SMTPRecipientsRefused, match="may not send mail"):
            submit(nodes, port, "mute", alice, f"m-mute-{port}")
    submit(nodes, 587, "alice", f"mute@{DOMAIN}", "m-to-mute")
    wait_for_message(nodes, "mute", "m-to-mute")

    # SMTP (25) denied: another server's RCPT is refused; a UMS user's mail reaches it.
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.mail("bob@outside.test")[0] == 250
        code, reply = smtp.rcpt(f"inner@{DOMAIN}")
        assert code == 550 and b"does not accept mail from other servers" in reply, reply
        smtp.rset()
        smtp.mail("bob@outside.test")
        assert smtp.rcpt(alice)[0] == 250  # the others are not affected
    submit(nodes, 587, "alice", f"inner@{DOMAIN}", "m-internal")
    wait_for_message(nodes, "inner", "m-internal")
    # Allowing it again lets other servers' mail in.
    patch_mailbox(client, "inner", protocolAccess={"smtp": "allow"})
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=30) as smtp:
        smtp.sendmail("bob@outside.test", [f"inner@{DOMAIN}"], BODY % b"m-from-outside")
    wait_for_message(nodes, "inner", "m-from-outside")
