"""Used space measured on a real IMAP node: mail delivered through real Postfix into the
node's Maildirs, one collection command per node, bytes and messages rising, and a quota
warning crossing 80 % mailed once (to a real SMTP listener) and shown in the portal."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest
from django.test import Client
from django.urls import reverse

from mail.models import Mailbox
from tests.fixtures import Cast
from usage import collect
from usage.models import MailboxUsage, QuotaWarning

from .conftest import MailNodes
from .outside import smtp_sink
from .test_mail_flow import DOMAIN, send, setup_mail, wait_for_message

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


def _send_big(nodes: MailNodes, to: str, marker: str, size: int) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "bob@outside.test", to, marker
    message.set_content(f"{marker}\n" + ("x" * 75 + "\n") * (size // 76))
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=30) as smtp:
        smtp.send_message(message)


def _usage() -> MailboxUsage:
    return MailboxUsage.objects.get(mailbox__email=f"alice@{DOMAIN}")


def test_delivered_mail_raises_the_measured_space_and_a_crossing_warns_once(
    cast: Cast, mail_nodes: MailNodes, settings
) -> None:
    client, _domain = setup_mail(cast)
    alice = Mailbox.objects.get(email=f"alice@{DOMAIN}")
    response = client.patch(
        reverse("mail-mailbox-detail", args=[alice.pk]), {"quotaMb": 1}, format="json"
    )
    assert response.status_code == 200, response.content

    first = collect.sweep()
    assert first["nodes"] == 1 and first["missed"] == 0, first
    before = _usage()
    assert before.messages == 0

    send(mail_nodes, f"alice@{DOMAIN}", "marker-used-1")
    wait_for_message(mail_nodes, "alice", "marker-used-1")
    collect.sweep()
    after = _usage()
    assert after.messages == 1 and after.used_bytes > before.used_bytes
    alice.refresh_from_db()
    assert alice.used_bytes == after.used_bytes and alice.used_updated_at is not None
    assert not QuotaWarning.objects.exists()

    # About 850 KB more: over 80 % of 1 MB. One warning, one mail per administrator.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    with smtp_sink("127.0.0.1") as sink:
        settings.EMAIL_HOST, settings.EMAIL_PORT = sink.address, sink.port
        _send_big(mail_nodes, f"alice@{DOMAIN}", "marker-used-big", 850_000)
        wait_for_message(mail_nodes, "alice", "marker-used-big")
        result = collect.sweep()
        assert _usage().messages == 2 and _usage().used_bytes > 800_000
        assert [w.percent for w in QuotaWarning.objects.all()] == [80]
        mail = sink.wait_for(f"alice@{DOMAIN}".encode())
        assert b"80 %" in mail
        received = len(sink.received)
        assert result["mailed"] == 1 and received >= 1
        # The next run measures again and warns no one again.
        again = collect.sweep()
        assert again["mailed"] == 0 and len(sink.received) == received
        assert QuotaWarning.objects.count() == 1

    # The portal shows the measured value, not "unknown", and the warning.
    portal = Client()
    portal.force_login(cast.sub_admin)
    page = portal.get(reverse("mail:mailbox-edit", args=[alice.pk])).content.decode()
    assert "unknown of" not in page and "of 1 MB" in page
    assert f"alice@{DOMAIN}" in portal.get(reverse("usage:quota-warnings")).content.decode()
