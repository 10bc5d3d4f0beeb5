"""DKIM end to end on real daemons: a mailbox submits mail to an external address through
the SMTP node (Postfix + OpenDKIM, converged from the database); the external MTA (an
SMTP sink the node relays to via ``outbound_relay``) gets it signed, and dkimpy verifies
the signature against the TXT record the DNS page tells the owner to publish.

Also: a domain without a key is not signed; after a rotation the old selector keeps
signing until the DNS check (through a real DNS server, ``UMS_DNS_RESOLVER``) sees the
new record, then the new one signs; inbound mail gets ``Authentication-Results``.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage

import dkim
import paramiko
import pytest
from django.urls import reverse

from deploy.services import registry
from deploy.services.courier import SERVICE as COURIER
from deploy.services.lda import SERVICE as LDA
from deploy.services.opendkim import SERVICE as OPENDKIM
from deploy.services.postfix import SERVICE as POSTFIX
from mail import dkim as mail_dkim
from mail.models import DkimKey
from servers.models import Zone
from tests.fixtures import Cast

from .conftest import MAIL_PRIVATE_PATHS, MailNodes, approved_node, trusting_cluster
from .outside import Sink, smtp_sink, txt_server
from .test_faults import heal_by_reconciler, kill_sshd, phase_hook  # noqa: F401
from .test_mail_flow import (
    DOMAIN,
    PASSWORD,
    assert_jobs_succeeded,
    setup_mail,
    tls,
    wait_for_message,
)

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

PLAIN = "plain.example"


@pytest.fixture
def signing_nodes(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,
    controller_key,
    zone: Zone,
    cast: Cast,
    monkeypatch: pytest.MonkeyPatch,
    settings,
) -> Iterator[tuple[MailNodes, Sink]]:
    """SMTP and IMAP nodes converged with OpenDKIM; outbound mail goes to a sink."""
    monkeypatch.setattr(registry, "SERVICES", [COURIER, LDA, OPENDKIM, POSTFIX])
    workdir = tmp_path_factory.mktemp("dkim")
    with (
        trusting_cluster(workdir, 2, controller_pkey, MAIL_PRIVATE_PATHS) as cluster,
        smtp_sink(cluster.bridge_address) as sink,
    ):
        settings.UMS_CONVERGE = {
            "postfix_maillog_file": "/var/spool/postfix/maillog",
            "lda_log_file": "/var/lib/ums-lda/lda.log",
            "content_filter": False,
            "outbound_relay": f"{sink.address}:{sink.port}",
        }
        settings.UMS_AUTO_CONVERGE = True
        settings.UMS_CONVERGE_ON_APPROVAL = True
        smtp, imap = cluster.nodes
        imap_node = approved_node(zone, cast, imap, ["imap"])
        smtp_node = approved_node(zone, cast, smtp, ["smtp"])
        yield MailNodes(cluster, smtp, imap, smtp_node, imap_node), sink


def submit(nodes: MailNodes, sender: str, marker: str) -> None:
    """Authenticated submission on 587, as a mail client sends."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, "someone@outside.test", marker
    message["Message-ID"] = f"<{marker}@client>"
    message.set_content(f"hello {marker}\n")
    with smtplib.SMTP(nodes.smtp.address, 587, timeout=30) as smtp:
        smtp.starttls(context=tls())
        smtp.login(sender, PASSWORD)
        smtp.send_message(message)


def published(*keys: DkimKey) -> dict[bytes, bytes]:
    """The TXT records the DNS page shows, as the owner would publish them."""
    return {
        mail_dkim.record_name(k.selector, k.domain.name).encode(): mail_dkim.record_value(
            k.public_key
        ).encode()
        for k in keys
    }


def verify(raw: bytes, records: dict[bytes, bytes]) -> tuple[bool, str]:
    """dkimpy's verdict and the selector that signed."""
    assert b"DKIM-Signature:" in raw, raw.decode(errors="replace")[:2000]
    selector = re.search(rb"\bs=([^;\s]+)", raw.split(b"\r\n\r\n")[0].replace(b"\r\n", b""))
    ok = dkim.verify(raw, dnsfunc=lambda name, timeout=5: records.get(name))
    return ok, selector.group(1).decode() if selector else ""


def test_outbound_mail_is_dkim_signed_rotation_waits_for_dns(
    cast: Cast, signing_nodes: tuple[MailNodes, Sink], settings
) -> None:
    nodes, sink = signing_nodes
    client, domain = setup_mail(cast)
    response = client.post(
        reverse("mail-dkim-key-list"), {"domain": domain["id"], "selector": "s1"}, format="json"
    )
    assert response.status_code == 201, response.content
    first = DkimKey.objects.get(pk=response.json()["id"])
    # A second domain with a mailbox and no key.
    response = client.post(
        reverse("mail-domain-list"), {"name": PLAIN, "customer": domain["customer"]}, format="json"
    )
    assert response.status_code == 201, response.content
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": response.json()["id"], "localPart": "bob", "password": PASSWORD},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert_jobs_succeeded()
    keytable = nodes.smtp.path(f"/etc/ums-opendkim/keys/{DOMAIN}.s1.key")
    assert oct(keytable.stat().st_mode & 0o777) == "0o600"
    assert keytable.owner() == "opendkim"

    # Signed with the domain's key; dkimpy verifies it against the published record.
    submit(nodes, f"alice@{DOMAIN}", "mk-signed-1")
    raw = sink.wait_for(b"mk-signed-1")
    assert verify(raw, published(first)) == (True, first.selector)
    # Tampering in transit breaks it (the test can fail).
    assert not dkim.verify(
        raw.replace(b"hello mk-signed-1", b"hullo mk-signed-1"),
        dnsfunc=lambda name, timeout=5: published(first).get(name),
    )

    # A domain without a key: delivered, unsigned.
    submit(nodes, f"bob@{PLAIN}", "mk-unsigned")
    assert b"DKIM-Signature:" not in sink.wait_for(b"mk-unsigned")

    # Rotation: the new key is not in DNS yet, so the old selector keeps signing.
    response = client.post(
        reverse("mail-dkim-key-rotate", args=[first.pk]), {"selector": "s2"}, format="json"
    )
    assert response.status_code == 201, response.content
    second = DkimKey.objects.get(pk=response.json()["id"])
    assert_jobs_succeeded()
    submit(nodes, f"alice@{DOMAIN}", "mk-rotated-before-dns")
    raw = sink.wait_for(b"mk-rotated-before-dns")
    assert verify(raw, published(first)) == (True, first.selector)

    # The owner publishes the new record; the DNS check (a real resolver) sees it, and
    # the next message is signed with the new selector.
    zone = {
        mail_dkim.record_name(k.selector, DOMAIN): [mail_dkim.record_value(k.public_key)]
        for k in (first, second)
    }
    with txt_server(zone) as resolver:
        settings.UMS_DNS_RESOLVER = [resolver]
        response = client.post(reverse("mail-domain-dns-check", args=[domain["id"]]))
        assert response.status_code == 202, response.content
    assert_jobs_succeeded()
    second.refresh_from_db()
    assert second.dns_status == "match", second.dns_detail
    records = client.get(reverse("mail-domain-dns", args=[domain["id"]])).json()
    signing = [r for r in records if r.get("signing")]
    assert [r["name"] for r in signing] == [mail_dkim.record_name(second.selector, DOMAIN)]
    submit(nodes, f"alice@{DOMAIN}", "mk-rotated-after-dns")
    raw = sink.wait_for(b"mk-rotated-after-dns")
    assert verify(raw, published(first, second)) == (True, second.selector)

    # Inbound from outside on port 25: OpenDKIM adds its verdict for the receiver.
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = (
        "x@outside.test",
        f"alice@{DOMAIN}",
        "mk-in",
    )
    message.set_content("inbound\n")
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=30) as smtp:
        smtp.send_message(message)
    text = wait_for_message(nodes, "alice", "mk-in")
    assert re.search(r"Authentication-Results: \S+;\s+dkim=none", text), text[:1500]

    # The retired key is deleted: its private key leaves the node.
    response = client.delete(reverse("mail-dkim-key-detail", args=[first.pk]))
    assert response.status_code == 204, response.content
    assert_jobs_succeeded()
    keys = sorted(p.name for p in nodes.smtp.path("/etc/ums-opendkim/keys").iterdir())
    assert keys == [f"{DOMAIN}.s2.key"]

    # A dead signer never holds mail back: it leaves unsigned (default_action=accept).
    pid = int(nodes.smtp.path("/run/ums-opendkim/opendkim.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    submit(nodes, f"alice@{DOMAIN}", "mk-signer-down")
    assert b"DKIM-Signature:" not in sink.wait_for(b"mk-signer-down")


def test_signer_never_reloaded_after_a_crash_is_healed_by_the_reconciler(
    cast: Cast,
    signing_nodes: tuple[MailNodes, Sink],
    settings,
    phase_hook,  # noqa: F811
) -> None:
    """The node's sshd dies when the new signing tables are live but OpenDKIM has not
    re-read them (the controller lost mid-converge): the signer keeps the old key. The
    reconciler, unaided, reloads it and removes the old private key from the node."""
    nodes, sink = signing_nodes
    client, domain = setup_mail(cast)
    settings.UMS_CONVERGE_RETRY_MAX_SECONDS = 1
    response = client.post(
        reverse("mail-dkim-key-list"), {"domain": domain["id"], "selector": "s1"}, format="json"
    )
    first = DkimKey.objects.get(pk=response.json()["id"])
    response = client.post(
        reverse("mail-dkim-key-rotate", args=[first.pk]), {"selector": "s2"}, format="json"
    )
    second = DkimKey.objects.get(pk=response.json()["id"])
    assert_jobs_succeeded()

    fired: list[str] = []

    def hook(at: str, service: str) -> None:
        if at == "reload" and service == "opendkim" and not fired:
            fired.append(at)
            kill_sshd(nodes)

    phase_hook(hook)
    # Deleting the retired key moves signing to s2 at once.
    assert client.delete(reverse("mail-dkim-key-detail", args=[first.pk])).status_code == 204
    phase_hook(lambda at, service: None)
    assert fired == ["reload"]
    keytable = nodes.smtp.path("/etc/ums-opendkim/KeyTable").read_text()
    assert ":s2:" in keytable and ":s1:" not in keytable
    submit(nodes, f"alice@{DOMAIN}", "mk-not-reloaded")
    raw = sink.wait_for(b"mk-not-reloaded")
    assert verify(raw, published(first)) == (True, "s1")  # the fault is real

    nodes.smtp.start()  # sshd back; nothing else is touched by hand
    job = heal_by_reconciler(nodes.smtp_node)
    assert "opendkim" in job.result["reloaded"], job.result
    keys = sorted(p.name for p in nodes.smtp.path("/etc/ums-opendkim/keys").iterdir())
    assert keys == [f"{DOMAIN}.s2.key"]
    submit(nodes, f"alice@{DOMAIN}", "mk-healed")
    assert verify(sink.wait_for(b"mk-healed"), published(second)) == (True, "s2")
