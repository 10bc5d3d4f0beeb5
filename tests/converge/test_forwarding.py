"""Forwards (with and without a copy), distribution groups and alias domains delivered
end to end on real nodes; the catch-all is proved in test_mail_flow.py and loops are
refused before saving (tests/mail/test_forwarding_loops.py). Forwards to other providers
go out with an SRS envelope sender (postsrsd), and bounces to it reach the sender."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator

import paramiko
import pytest

from deploy.services import registry
from deploy.services.courier import SERVICE as COURIER
from deploy.services.lda import SERVICE as LDA
from deploy.services.postfix import SERVICE as POSTFIX
from deploy.services.srs import SERVICE as SRS
from mail import actions
from mail.models import Domain
from servers.models import Zone
from tests.fixtures import Cast
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401

from .conftest import MAIL_PRIVATE_PATHS, MailNodes, approved_node, trusting_cluster
from .outside import Sink, smtp_sink
from .test_courier_access import add_mailbox
from .test_mail_flow import (
    DOMAIN,
    PASSWORD,
    assert_jobs_succeeded,
    maildir,
    send,
    setup_mail,
    tls,
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


@pytest.fixture
def srs_nodes(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,  # noqa: F811
    controller_key,  # noqa: F811
    zone: Zone,  # noqa: F811
    cast: Cast,
    monkeypatch: pytest.MonkeyPatch,
    settings,
) -> Iterator[tuple[MailNodes, Sink]]:
    """SMTP and IMAP nodes with postsrsd on the SMTP node; outbound mail goes to a sink."""
    monkeypatch.setattr(registry, "SERVICES", [COURIER, LDA, SRS, POSTFIX])
    private = (*MAIL_PRIVATE_PATHS, "/etc/ums-srs", "/run/ums-srs")
    workdir = tmp_path_factory.mktemp("srs")
    with (
        trusting_cluster(workdir, 2, controller_pkey, private) as cluster,
        smtp_sink(cluster.bridge_address) as sink,
    ):
        settings.UMS_CONVERGE = {
            "postfix_maillog_file": "/var/spool/postfix/maillog",
            "lda_log_file": "/var/lib/ums-lda/lda.log",
            "content_filter": False,
            "outbound_relay": f"{sink.address}:{sink.port}",
            "srs_domain": DOMAIN,
        }
        settings.UMS_AUTO_CONVERGE = True
        settings.UMS_CONVERGE_ON_APPROVAL = True
        smtp, imap = cluster.nodes
        imap_node = approved_node(zone, cast, imap, ["imap"])
        smtp_node = approved_node(zone, cast, smtp, ["smtp"])
        yield MailNodes(cluster, smtp, imap, smtp_node, imap_node), sink


def test_external_forwards_are_srs_rewritten_and_bounces_find_the_sender(
    cast: Cast, srs_nodes: tuple[MailNodes, Sink]
) -> None:
    nodes, sink = srs_nodes
    client, domain = setup_mail(cast)
    add_mailbox(client, domain, "fwd", forwardTo=["friend@outside.test"])  # keeps a copy
    assert_jobs_succeeded()

    # An outside sender's mail forwarded outside: the envelope sender is ours (SRS).
    send(nodes, f"fwd@{DOMAIN}", "m-srs", sender="bob@sender.test")
    wait_for_message(nodes, "fwd", "m-srs")
    sink.wait_for(b"m-srs")
    [(envelope, recipients)] = [(s, r) for s, r, raw in sink.received if b"m-srs" in raw]
    assert recipients == ["friend@outside.test"]
    assert re.fullmatch(rf"SRS0=[^=]+=[^=]+=sender\.test=bob@{re.escape(DOMAIN)}", envelope)

    # Our own users' mail is never rewritten.
    with smtplib.SMTP(nodes.smtp.address, 587, timeout=30) as smtp:
        smtp.starttls(context=tls())
        smtp.login(f"alice@{DOMAIN}", PASSWORD)
        smtp.sendmail(f"alice@{DOMAIN}", ["x@outside.test"], b"Subject: m-own\r\n\r\nhi\r\n")
    sink.wait_for(b"m-own")
    assert [s for s, _r, raw in sink.received if b"m-own" in raw] == [f"alice@{DOMAIN}"]

    # The receiver bounces to the SRS address: it is accepted and goes back to bob.
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=30) as smtp:
        smtp.sendmail("", [envelope], b"Subject: m-bounce\r\n\r\nundeliverable\r\n")
    sink.wait_for(b"m-bounce")
    assert [r for _s, r, raw in sink.received if b"m-bounce" in raw] == [["bob@sender.test"]]
    # A forged SRS address (wrong hash) is refused.
    forged = re.sub(r"^SRS0=[^=]+=", "SRS0=AAAA=", envelope)
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("")
        assert smtp.rcpt(forged)[0] >= 500
