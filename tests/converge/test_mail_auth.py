"""Inbound mail authentication on real daemons: SPF and DMARC (OpenDMARC), DKIM
(OpenDKIM) and the DMARC-failure policy (the content filter) on an SMTP node whose
checks resolve through a real BIND (``mail_auth_resolvers``) publishing SPF, DKIM and
DMARC records for two sender domains.

* ``good.mailauth.example`` lists the test host's address in SPF, signs with a published key and
  publishes ``p=reject``: a message from it arrives with spf=pass, dkim=pass, dmarc=pass.
* ``bank.mailauth.example`` lists another address and publishes ``p=reject``: a forged message
  (our address, no signature) fails DMARC and is held (then found in spam hold through
  the API), tagged, or refused as the recipient's policy says.
* With the DNS server gone, mail is still delivered, marked ``temperror``, and its SPF
  result reads ``spf=temperror`` (not libspf2's ``fail``), which SpamAssassin does not
  score as SPF_FAIL; a real SPF failure still reads ``spf=fail`` and is scored.

Unit tests for the rendering and the filter's decisions are in
``tests/services/opendmarc/``.
"""

from __future__ import annotations

import base64
import imaplib
import os
import re
import signal
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import dkim
import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.urls import reverse

from deploy.services import registry
from deploy.services.courier import SERVICE as COURIER
from deploy.services.opendkim import SERVICE as OPENDKIM
from deploy.services.opendmarc import SERVICE as OPENDMARC
from deploy.services.postfix import SERVICE as POSTFIX
from deploy.services.spamassassin import SERVICE as SPAMASSASSIN
from servers.models import Zone
from spamhold import ingest
from spamhold.models import HeldMessage, Reason
from tests.fixtures import Cast, token_client
from tests.services.nginx.bind import Bind
from ums.models import Job

from .conftest import MAIL_PRIVATE_PATHS, MailNodes, approved_node, trusting_cluster
from .test_faults import converge_job, heal_by_reconciler, kill_sshd, phase_hook  # noqa: F401
from .test_filtering import FILTER_PRIVATE_PATHS, held_with, needs_filters
from .test_mail_flow import DOMAIN, PASSWORD, assert_jobs_succeeded, maildir, setup_mail, tls

pytestmark = [needs_filters, pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

#: Not under ".test": libunbound (OpenDKIM's resolver) answers that TLD locally (RFC 6761).
ZONE = "mailauth.example"
GOOD, BANK, SELECTOR = f"good.{ZONE}", f"bank.{ZONE}", "s1"
PRIVATE_PATHS = tuple(dict.fromkeys((*MAIL_PRIVATE_PATHS, *FILTER_PRIVATE_PATHS)))


def dkim_key() -> tuple[bytes, str]:
    """(private key PEM, the TXT record as zone-file strings) of a fresh 2048-bit key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    value = f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    # A TXT string holds 255 bytes; resolvers join the strings of one record.
    return pem, " ".join(f'"{value[i : i + 200]}"' for i in range(0, len(value), 200))


def records(host: str, dkim_txt: str) -> str:
    """Zone lines of :data:`ZONE`."""
    good, bank = GOOD.removesuffix(f".{ZONE}"), BANK.removesuffix(f".{ZONE}")
    return (
        f'{good} IN TXT "v=spf1 ip4:{host} -all"\n'
        f"{SELECTOR}._domainkey.{good} IN TXT ( {dkim_txt} )\n"
        f'_dmarc.{good} IN TXT "v=DMARC1; p=reject"\n'
        f'{bank} IN TXT "v=spf1 ip4:192.0.2.10 -all"\n'
        f'_dmarc.{bank} IN TXT "v=DMARC1; p=reject"\n'
    )


@pytest.fixture
def auth_nodes(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,
    controller_key,
    zone: Zone,
    cast: Cast,
    monkeypatch: pytest.MonkeyPatch,
    settings,
) -> Iterator[tuple[MailNodes, Bind, bytes]]:
    """SMTP (OpenDKIM, OpenDMARC, content filter with spamd) and IMAP nodes; a BIND on
    the bridge's port 53 as the checks' resolver."""
    monkeypatch.setattr(registry, "SERVICES", [SPAMASSASSIN, COURIER, OPENDKIM, OPENDMARC, POSTFIX])
    workdir = tmp_path_factory.mktemp("mailauth")
    pem, dkim_txt = dkim_key()
    with trusting_cluster(workdir, 2, controller_pkey, PRIVATE_PATHS) as cluster:
        host = cluster.bridge_address
        bind = Bind(
            workdir / "bind", address=host, port=53, records=records(host, dkim_txt), zone=ZONE
        )
        bind.start()
        try:
            settings.UMS_CONVERGE = {
                "postfix_maillog_file": "/var/spool/postfix/maillog",
                "spam_network_checks": False,
                "mail_auth_resolvers": [host],
            }
            settings.UMS_AUTO_CONVERGE = True
            settings.UMS_CONVERGE_ON_APPROVAL = True
            smtp, imap = cluster.nodes
            imap_node = approved_node(zone, cast, imap, ["imap"])
            smtp_node = approved_node(zone, cast, smtp, ["smtp"])
            yield MailNodes(cluster, smtp, imap, smtp_node, imap_node), bind, pem
        finally:
            if bind.process is not None and bind.process.poll() is None:
                os.kill(bind.process.pid, signal.SIGCONT)
            bind.stop()


def message(sender: str, marker: str, pem: bytes | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, f"alice@{DOMAIN}", marker
    msg["Date"] = "Tue, 01 Oct 2024 10:00:00 +0000"
    msg["Message-ID"] = f"<{marker}@{sender.partition('@')[2]}>"
    msg.set_content(f"Quarterly figures {marker}\n")
    raw = msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if pem is None:
        return raw
    domain = sender.partition("@")[2].encode()
    signature = dkim.sign(
        raw, SELECTOR.encode(), domain, pem,
        canonicalize=(b"relaxed", b"relaxed"), include_headers=[b"from", b"to", b"subject"],
    )  # fmt: skip
    return signature + raw


def send(nodes: MailNodes, sender: str, data: bytes) -> None:
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=120) as smtp:
        smtp.sendmail(sender, [f"alice@{DOMAIN}"], data)


def send_when_ready(nodes: MailNodes, sender: str, data: bytes) -> None:
    """Send, retrying 4xx while spamd finishes loading its rules."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return send(nodes, sender, data)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError) as exc:
            code = getattr(exc, "smtp_code", 0) or max(c for c, _m in exc.recipients.values())
            if code >= 500 or time.monotonic() > deadline:
                raise
            time.sleep(2)


def over_imap(nodes: MailNodes, marker: str, timeout: float = 120) -> str:
    """The message carrying ``marker`` as alice reads it over IMAPS."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        box = maildir(nodes, "alice")
        if box.is_dir() and any(marker in p.read_text(errors="replace") for p in box.iterdir()):
            break
        time.sleep(0.3)
    with imaplib.IMAP4_SSL(nodes.imap.address, 993, ssl_context=tls()) as imap:
        imap.login(f"alice@{DOMAIN}", PASSWORD)
        imap.select("INBOX")
        _typ, data = imap.search(None, "SUBJECT", marker)
        ids = data[0].split()
        log = nodes.smtp.path("/var/spool/postfix/maillog")
        assert ids, f"{marker} not in alice's INBOX\n{log.read_text()[-4000:]}"
        _typ, fetched = imap.fetch(ids[-1], "(RFC822)")
        return fetched[0][1].decode(errors="replace")


def results(text: str, node: str) -> str:
    """Every Authentication-Results value this node wrote, unfolded, joined."""
    head = text.split("\r\n\r\n", 1)[0].replace("\r\n\t", " ").replace("\r\n ", " ")
    found = [
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")
        if line.lower().startswith("authentication-results:")
    ]
    return " | ".join(v for v in found if v.split(";")[0].split()[0] == node)


def test_spf_dkim_dmarc_results_and_the_dmarc_failure_policy(
    cast: Cast, auth_nodes: tuple[MailNodes, Bind, bytes]
) -> None:
    nodes, bind, pem = auth_nodes
    _client, domain = setup_mail(cast)
    admin = token_client(cast.sub_admin)
    customer_policy = reverse("mail-customer-policy-detail", args=[domain["customer"]])
    # No clamd on this node: these tests are about authentication, not viruses.
    response = admin.patch(customer_policy, {"antivirus": False}, format="json")
    assert response.status_code == 200, response.content
    assert_jobs_succeeded()
    wait_for_scanners_spamd_only(nodes)
    node = nodes.smtp_node.hostname.lower()

    # Allowed address, valid signature: all three pass, delivered, read over IMAPS.
    send_when_ready(nodes, f"news@{GOOD}", message(f"news@{GOOD}", "mk-auth-good", pem))
    verdicts = results(over_imap(nodes, "mk-auth-good"), node)
    assert re.search(r"\bspf=pass\b", verdicts), verdicts
    assert re.search(r"\bdkim=pass\b", verdicts), verdicts
    assert re.search(r"\bdmarc=pass\b", verdicts), verdicts

    # A forged sender (address not in its SPF, no signature, p=reject): the customer's
    # policy holds it; the controller's spam hold shows it through the API.
    response = admin.patch(customer_policy, {"dmarcFailure": "hold"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["effectiveFiltering"]["dmarcFailure"]["value"] == "hold"
    assert_jobs_succeeded()
    send(nodes, f"ceo@{BANK}", message(f"ceo@{BANK}", "mk-auth-forged-hold"))
    queue_id, headers = held_with(nodes, "mk-auth-forged-hold")
    assert f"X-UMS-Hold: dmarc; sender={BANK}; policy=reject" in headers, headers
    assert re.search(rf"{re.escape(node)};\s+dmarc=fail", headers.replace("\n\t", " ")), headers
    assert ingest.ingest_node(nodes.smtp_node).new == 1
    listed = admin.get(reverse("spamhold-message-list"), {"reason": "dmarc"}).json()["results"]
    assert [r["id"] for r in listed] == [HeldMessage.objects.get(queue_id=queue_id).pk]
    assert HeldMessage.objects.get(queue_id=queue_id).reason == Reason.DMARC

    # The domain overrides its customer: tag. Delivered, marked in a header and subject.
    domain_policy = reverse("mail-domain-policy-detail", args=[domain["id"]])
    response = admin.patch(domain_policy, {"dmarcFailure": "tag"}, format="json")
    assert response.status_code == 200, response.content
    assert_jobs_succeeded()
    # The forger also writes a passing SPF result of its own: OpenDMARC's (ours) counts.
    forged_pass = f"Authentication-Results: relay.example; spf=pass smtp.mailfrom={BANK}\r\n"
    send(nodes, f"ceo@{BANK}", message(f"ceo@{BANK}", "mk-auth-forged-tag").replace(
        b"\r\n\r\n", b"\r\n" + forged_pass.encode() + b"\r\n", 1))  # fmt: skip
    text = over_imap(nodes, "mk-auth-forged-tag")
    assert "Subject: [DMARC] mk-auth-forged-tag" in text, text[:3000]
    assert f"X-UMS-DMARC: fail; action=tag; domain={BANK}; policy=reject" in text, text[:3000]
    assert re.search(r"\bspf=fail\b", results(text, node)), results(text, node)
    # A real SPF failure (DNS up, -all, an address the record does not list) is scored,
    # whatever result the sender wrote itself.
    assert "SPF_FAIL" in spam_tests(text), text[:3000]

    # As the sender's domain asks: its p=reject refuses the message in the SMTP session.
    response = admin.patch(domain_policy, {"dmarcFailure": "sender"}, format="json")
    assert response.status_code == 200, response.content
    assert_jobs_succeeded()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(nodes, f"ceo@{BANK}", message(f"ceo@{BANK}", "mk-auth-forged-reject"))
    assert refused.value.smtp_code == 550 and BANK.encode() in refused.value.smtp_error

    # DNS unreachable (the server stops answering): nothing can be verified; the
    # message is delivered, marked.
    assert bind.process is not None
    os.kill(bind.process.pid, signal.SIGSTOP)
    send(nodes, f"news@{GOOD}", message(f"news@{GOOD}", "mk-auth-nodns", pem))
    text = over_imap(nodes, "mk-auth-nodns")
    # OpenDMARC writes a DMARC record it could not fetch as dmarc=none and libspf2 an SPF
    # record it could not fetch as spf=fail; the filter's own lookups tell, and what the
    # user, Sieve and SpamAssassin read is temperror: no SPF_FAIL scored.
    verdicts = results(text, node)
    assert re.search(rf"\bspf=temperror smtp\.mailfrom={re.escape(GOOD)}", verdicts), verdicts
    assert re.search(r"\bdmarc=temperror\b", verdicts), verdicts
    assert not re.search(r"\b(spf|dmarc)=(fail|none)\b", verdicts), verdicts
    assert f"X-UMS-DMARC: temperror; action=none; domain={GOOD}" in text, text[:3000]
    assert "SPF_FAIL" not in spam_tests(text), text[:3000]


def spam_tests(text: str) -> list[str]:
    """The SpamAssassin rules the filter's X-Spam-Status lists."""
    found = re.search(r"^X-Spam-Status:.*\btests=([A-Z0-9_,]+)", text, re.M)
    assert found, text[:3000]
    return found.group(1).split(",")


def wait_for_scanners_spamd_only(nodes: MailNodes) -> None:
    """spamd answers (no clamd on this node: antivirus is off)."""
    from deploy.services.spamassassin import SPAMD_PORT

    from .test_filtering import _port_open

    deadline = time.monotonic() + 300
    while not _port_open(nodes, SPAMD_PORT):
        assert time.monotonic() < deadline, "spamd not listening on the SMTP node"
        time.sleep(1)


# --------------------------------------------------------------------------- fault


@pytest.fixture
def checking_nodes(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,
    controller_key,
    zone: Zone,
    cast: Cast,
    monkeypatch: pytest.MonkeyPatch,
    settings,
) -> Iterator[MailNodes]:
    """SMTP and IMAP nodes with OpenDKIM and OpenDMARC, no content filter (no spamd)."""
    monkeypatch.setattr(registry, "SERVICES", [COURIER, OPENDKIM, OPENDMARC, POSTFIX])
    workdir = tmp_path_factory.mktemp("mailauth-fault")
    with trusting_cluster(workdir, 2, controller_pkey, MAIL_PRIVATE_PATHS) as cluster:
        settings.UMS_CONVERGE = {
            "postfix_maillog_file": "/var/spool/postfix/maillog",
            "content_filter": False,
        }
        settings.UMS_AUTO_CONVERGE = True
        settings.UMS_CONVERGE_ON_APPROVAL = True
        smtp, imap = cluster.nodes
        imap_node = approved_node(zone, cast, imap, ["imap"])
        smtp_node = approved_node(zone, cast, smtp, ["smtp"])
        yield MailNodes(cluster, smtp, imap, smtp_node, imap_node)


def resolver_seen_by_checker(nodes: MailNodes) -> str:
    """/etc/resolv.conf as the running OpenDMARC sees it (its own mount namespace)."""
    pid = nodes.smtp.path("/run/ums-opendmarc/opendmarc.pid").read_text().strip()
    return Path(f"/proc/{pid}/root/etc/resolv.conf").read_text()


def test_checker_never_restarted_after_a_crash_is_healed_by_the_reconciler(
    cast: Cast,
    checking_nodes: MailNodes,
    settings,
    phase_hook,  # noqa: F811
) -> None:
    """The node's sshd dies after the new resolver file is live but before OpenDMARC
    restarted on it (the controller lost mid-converge): the checker keeps asking the old
    resolver. The reconciler alone restarts it; it then resolves through the new one."""
    nodes = checking_nodes
    setup_mail(cast)
    settings.UMS_CONVERGE_RETRY_MAX_SECONDS = 1
    assert "192.0.2.53" not in resolver_seen_by_checker(nodes)
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "mail_auth_resolvers": ["192.0.2.53"]}

    fired: list[str] = []

    def hook(at: str, service: str) -> None:
        if at == "reload" and service == "opendmarc" and not fired:
            fired.append(at)
            kill_sshd(nodes)

    phase_hook(hook)
    job = converge_job(cast, nodes.smtp_node)
    phase_hook(lambda at, service: None)
    assert fired == ["reload"] and job.status == Job.FAILED, job.log
    live = nodes.smtp.path("/etc/ums-opendmarc/resolv.conf").read_text()
    assert "nameserver 192.0.2.53" in live
    assert "192.0.2.53" not in resolver_seen_by_checker(nodes)  # the fault is real

    nodes.smtp.start()  # sshd back; nothing else is touched by hand
    job = heal_by_reconciler(nodes.smtp_node)
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert "opendmarc" in job.result["reloaded"], job.result
    assert "nameserver 192.0.2.53" in resolver_seen_by_checker(nodes)
    # The rest of the node keeps the system resolver.
    assert "192.0.2.53" not in Path("/etc/resolv.conf").read_text()  # shared with nodes
