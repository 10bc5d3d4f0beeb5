"""End to end on real daemons: API -> converge -> Postfix (SMTP node) -> Postfix virtual
delivery + Courier (IMAP node) -> IMAP/POP3/submission with the mailbox password."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import ssl
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.urls import reverse

from tests.fixtures import Cast, token_client

from .conftest import MailNodes

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

PASSWORD = "Tulip-Anvil-Sonnet-58"
DOMAIN = "converge.example"


def tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the nodes' self-signed certificates
    return context


def maildir(nodes: MailNodes, local: str, folder: str = "new") -> Path:
    return nodes.imap.path(f"/var/mail/vhosts/{DOMAIN}/{local}/Maildir/{folder}")


def wait_for_message(nodes: MailNodes, local: str, marker: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        box = maildir(nodes, local)
        if box.is_dir():
            for item in box.iterdir():
                text = item.read_text(errors="replace")
                if marker in text:
                    return text
        time.sleep(0.2)
    log = nodes.smtp.path("/var/spool/postfix/maillog")
    ilog = nodes.imap.path("/var/spool/postfix/maillog")
    from ums.models import Job

    failed = "\n".join(
        f"{j.kind} {j.title}: {j.error[:3000]}" for j in Job.objects.filter(status=Job.FAILED)
    )
    raise AssertionError(
        f"{marker} not delivered to {local}\n--- failed jobs ---\n{failed}\n--- smtp log ---\n"
        f"{log.read_text() if log.exists() else ''}\n--- imap log ---\n"
        f"{ilog.read_text() if ilog.exists() else ''}"
    )


def send(nodes: MailNodes, to: str, marker: str, sender: str = "bob@outside.test") -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, marker
    message.set_content(f"hello {marker}\n")
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=30) as smtp:
        smtp.send_message(message)


def assert_jobs_succeeded() -> None:
    from ums.models import Job

    failed = [
        f"{j.kind} {j.title}: {j.error[-3000:]}" for j in Job.objects.filter(status=Job.FAILED)
    ]
    assert not failed, "\n".join(failed)


def setup_mail(cast: Cast) -> tuple[object, dict]:
    """Customer, domain and mailbox, all through the API (each change converges)."""
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("customer-list"),
        {"name": "Converge Customer", "parent": cast.government.pk},
        format="json",
    )
    assert response.status_code == 201, response.content
    customer_id = response.json()["id"]
    response = client.post(
        reverse("mail-domain-list"), {"name": DOMAIN, "customer": customer_id}, format="json"
    )
    assert response.status_code == 201, response.content
    domain = response.json()
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": domain["id"], "localPart": "alice", "password": PASSWORD},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert_jobs_succeeded()
    return client, domain


def test_mail_created_through_the_api_is_delivered_and_read_over_imaps(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    _client, _domain = setup_mail(cast)
    send(mail_nodes, f"alice@{DOMAIN}", "marker-e2e-1")
    text = wait_for_message(mail_nodes, "alice", "marker-e2e-1")
    assert "hello marker-e2e-1" in text

    with imaplib.IMAP4_SSL(mail_nodes.imap.address, 993, ssl_context=tls()) as imap:
        imap.login(f"alice@{DOMAIN}", PASSWORD)
        imap.select("INBOX")
        _typ, data = imap.search(None, "ALL")
        ids = data[0].split()
        assert ids
        _typ, fetched = imap.fetch(ids[-1], "(RFC822)")
        assert b"marker-e2e-1" in fetched[0][1]
    with (
        pytest.raises(imaplib.IMAP4.error),
        imaplib.IMAP4_SSL(mail_nodes.imap.address, 993, ssl_context=tls()) as imap,
    ):
        imap.login(f"alice@{DOMAIN}", "wrong-password")


def converge_now(node, *, dry_run: bool = False) -> dict:
    """Converge through the API; returns the finished job's result."""
    from ums.models import Job

    client = token_client(Cast_holder.cast.sub_admin)
    response = client.post(
        reverse("node-converge", args=[node.pk]), {"dryRun": dry_run}, format="json"
    )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.SUCCEEDED, f"{job.kind} {job.params}\n{job.log}\n{job.error}"
    return job.result


class Cast_holder:
    cast: Cast


def test_aliases_submission_protocols_and_converge_guarantees(
    cast: Cast, mail_nodes: MailNodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ums.models import Job

    Cast_holder.cast = cast
    client, domain = setup_mail(cast)
    # An alias and a catch-all, through the API.
    response = client.post(
        reverse("mail-alias-list"),
        {"domain": domain["id"], "localPart": "team", "targets": [f"alice@{DOMAIN}"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    response = client.patch(
        reverse("mail-domain-detail", args=[domain["id"]]),
        {"catchAll": f"alice@{DOMAIN}"},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert_jobs_succeeded()
    send(mail_nodes, f"team@{DOMAIN}", "marker-alias")
    wait_for_message(mail_nodes, "alice", "marker-alias")
    send(mail_nodes, f"nobody-here@{DOMAIN}", "marker-catchall")
    wait_for_message(mail_nodes, "alice", "marker-catchall")

    # Submission on 587: the mailbox password works, none or a wrong one is refused,
    # and a mailbox cannot send as someone else.
    with smtplib.SMTP(mail_nodes.smtp.address, 587, timeout=30) as smtp:
        smtp.starttls(context=tls())
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail(f"alice@{DOMAIN}", ["someone@outside.test"], b"Subject: x\r\n\r\nx")
    with smtplib.SMTP(mail_nodes.smtp.address, 587, timeout=30) as smtp:
        smtp.starttls(context=tls())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(f"alice@{DOMAIN}", "wrong-password")
    with smtplib.SMTP(mail_nodes.smtp.address, 587, timeout=30) as smtp:
        smtp.starttls(context=tls())
        smtp.login(f"alice@{DOMAIN}", PASSWORD)
        # Sender restrictions apply at RCPT time (smtpd_delay_reject).
        with pytest.raises(smtplib.SMTPRecipientsRefused, match="not owned by user"):
            smtp.sendmail(f"boss@{DOMAIN}", [f"alice@{DOMAIN}"], b"Subject: spoof\r\n\r\nx")
        smtp.rset()
        smtp.sendmail(
            f"alice@{DOMAIN}", [f"alice@{DOMAIN}"], b"Subject: marker-submission\r\n\r\nhi\r\n"
        )
    wait_for_message(mail_nodes, "alice", "marker-submission")

    # Port 143 and 110 are closed by default; 993 and 995 are open.
    import socket

    for port, is_open in ((143, False), (110, False), (993, True), (995, True)):
        with socket.socket() as sock:
            sock.settimeout(5)
            assert (sock.connect_ex((mail_nodes.imap.address, port)) == 0) is is_open, port

    # A second converge changes nothing.
    for node in (mail_nodes.smtp_node, mail_nodes.imap_node):
        result = converge_now(node)
        assert result["changed"] == {}, result

    # A render that fails validation leaves every live file byte for byte unchanged.
    from deploy.services.postfix import PostfixService

    live = {
        p: p.read_bytes() for p in mail_nodes.smtp.path("/etc/postfix").iterdir() if p.is_file()
    }
    original = PostfixService.main_cf

    def broken(self, state):  # a test-only override: an invalid line in main.cf
        return original(self, state) + "this line is not a parameter\n"

    monkeypatch.setattr(PostfixService, "main_cf", broken)
    client2 = token_client(cast.sub_admin)
    response = client2.post(
        reverse("node-converge", args=[mail_nodes.smtp_node.pk]), {}, format="json"
    )
    assert response.status_code == 202
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.FAILED
    assert "missing '=' after attribute name" in job.error
    after = {
        p: p.read_bytes() for p in mail_nodes.smtp.path("/etc/postfix").iterdir() if p.is_file()
    }
    assert after == live
    assert not [p for p in mail_nodes.smtp.path("/etc/postfix").iterdir() if "stage" in p.name]

    # Dry run: the diff is reported, nothing is applied.
    result = converge_now(mail_nodes.smtp_node, dry_run=True)
    assert result["changed"] == {"postfix": ["/etc/postfix/main.cf"]}
    assert "+this line is not a parameter" in result["diffs"]["/etc/postfix/main.cf"]
    assert (
        mail_nodes.smtp.path("/etc/postfix/main.cf").read_bytes()
        == live[mail_nodes.smtp.path("/etc/postfix/main.cf")]
    )
    monkeypatch.undo()


def test_disabling_imap_refuses_login_while_pop3_follows_its_own_flag(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    from mail.models import Mailbox

    client, domain = setup_mail(cast)
    send(mail_nodes, f"alice@{DOMAIN}", "marker-pop")
    wait_for_message(mail_nodes, "alice", "marker-pop")
    # Disabling IMAP for the mailbox: IMAP login fails, POP3S follows its own flag.
    # (bob keeps IMAP, so the 993 listener stays up and alice's refusal is per mailbox.)
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": domain["id"], "localPart": "bob", "password": PASSWORD},
        format="json",
    )
    assert response.status_code == 201, response.content
    mailbox = Mailbox.objects.get(email=f"alice@{DOMAIN}")
    response = client.patch(
        reverse("mail-mailbox-detail", args=[mailbox.pk]),
        {"protocolAccess": {"imaps": "deny", "imap": "deny"}},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert_jobs_succeeded()
    # The LOGIN itself is refused (a locked imappw in userdb), not accepted and then
    # cut off with BYE as Courier's disableimap option alone would do.
    with (
        pytest.raises(imaplib.IMAP4.error, match=r"(?i)login failed"),
        imaplib.IMAP4_SSL(mail_nodes.imap.address, 993, ssl_context=tls()) as imap,
    ):
        imap.login(f"alice@{DOMAIN}", PASSWORD)
    with imaplib.IMAP4_SSL(mail_nodes.imap.address, 993, ssl_context=tls()) as imap:
        imap.login(f"bob@{DOMAIN}", PASSWORD)
        assert imap.select("INBOX")[0] == "OK"
    pop = poplib.POP3_SSL(mail_nodes.imap.address, 995, context=tls(), timeout=30)
    try:
        pop.user(f"alice@{DOMAIN}")
        pop.pass_(PASSWORD)
        assert pop.stat()[0] >= 1
    finally:
        pop.quit()
