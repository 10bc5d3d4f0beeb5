"""Domains are placed on IMAP nodes, and mail for each reaches its node only.

Two IMAP nodes and one SMTP node, real daemons. Two domains created through the API are
placed on different IMAP nodes (fewest domains first); the SMTP node's transport map
relays each to its holder, each IMAP node's Courier knows only its own domain's
mailboxes, and a message for each domain lands on its node and nowhere else.
"""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage

import paramiko
import pytest
from django.urls import reverse

from deploy.models import DomainPlacement
from servers.models import Zone
from tests.fixtures import Cast, token_client

from .fleet import Fleet, fleet

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

PASSWORD = "Tulip-Anvil-Sonnet-58"
DOMAINS = ("first.example", "second.example")
IMAP1, IMAP2, SMTP = 0, 1, 2


@pytest.fixture
def three_nodes(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,
    controller_key,
    zone: Zone,
    cast: Cast,
    mail_services: None,
):
    with fleet(tmp_path_factory, controller_pkey, zone, cast, [["imap"], ["imap"], ["smtp"]]) as f:
        yield f


def _failed_jobs() -> list[str]:
    from ums.models import Job

    return [f"{j.title}: {j.error[-3000:]}" for j in Job.objects.filter(status=Job.FAILED)]


def _send(f: Fleet, to: str, marker: str) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "bob@outside.test", to, marker
    message.set_content(f"hello {marker}\n")
    with smtplib.SMTP(f.tnodes[SMTP].address, 25, timeout=30) as smtp:
        smtp.send_message(message)


def _delivered(f: Fleet, index: int, domain: str, marker: str) -> bool:
    box = f.tnodes[index].path(f"/var/mail/vhosts/{domain}/user/Maildir/new")
    return box.is_dir() and any(marker in p.read_text(errors="replace") for p in box.iterdir())


def test_two_domains_on_two_imap_nodes_each_gets_its_own_mail(
    cast: Cast, three_nodes: Fleet
) -> None:
    f = three_nodes
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("customer-list"),
        {"name": "Placement Customer", "parent": cast.government.pk},
        format="json",
    )
    assert response.status_code == 201, response.content
    customer_id = response.json()["id"]
    domain_ids = {}
    for name in DOMAINS:
        response = client.post(
            reverse("mail-domain-list"), {"name": name, "customer": customer_id}, format="json"
        )
        assert response.status_code == 201, response.content
        domain_ids[name] = response.json()["id"]
        response = client.post(
            reverse("mail-mailbox-list"),
            {"domain": domain_ids[name], "localPart": "user", "password": PASSWORD},
            format="json",
        )
        assert response.status_code == 201, response.content
    assert not _failed_jobs(), _failed_jobs()

    # Placed as each domain was created: the first on the lower id, the second on the
    # node that then held fewer domains.
    placed = dict(
        DomainPlacement.objects.filter(domain_id__in=domain_ids.values()).values_list(
            "domain__name", "node_id"
        )
    )
    imap1, imap2 = f.nodes[IMAP1], f.nodes[IMAP2]
    assert placed == {DOMAINS[0]: imap1.pk, DOMAINS[1]: imap2.pk}

    # The SMTP node relays each domain to its holder.
    transport = f.tnodes[SMTP].path("/etc/postfix/transport").read_text()
    assert f"{DOMAINS[0]} ums-imap:[{f.tnodes[IMAP1].address}]:25" in transport
    assert f"{DOMAINS[1]} ums-imap:[{f.tnodes[IMAP2].address}]:25" in transport
    # Each IMAP node's desired state holds only its own domain.
    userdb1 = f.tnodes[IMAP1].path("/etc/courier/userdb").read_text()
    userdb2 = f.tnodes[IMAP2].path("/etc/courier/userdb").read_text()
    assert f"user@{DOMAINS[0]}" in userdb1 and DOMAINS[1] not in userdb1
    assert f"user@{DOMAINS[1]}" in userdb2 and DOMAINS[0] not in userdb2

    for name in DOMAINS:
        _send(f, f"user@{name}", f"marker-{name}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        _delivered(f, IMAP1, DOMAINS[0], f"marker-{DOMAINS[0]}")
        and _delivered(f, IMAP2, DOMAINS[1], f"marker-{DOMAINS[1]}")
    ):
        time.sleep(0.3)
    logs = "\n".join(
        f"--- {t.name} ---\n{t.path('/var/spool/postfix/maillog').read_text()}"
        for t in f.tnodes
        if t.path("/var/spool/postfix/maillog").exists()
    )
    assert _delivered(f, IMAP1, DOMAINS[0], f"marker-{DOMAINS[0]}"), logs
    assert _delivered(f, IMAP2, DOMAINS[1], f"marker-{DOMAINS[1]}"), logs
    # ... and nowhere else: the other IMAP node has no folder for the domain at all.
    assert not f.tnodes[IMAP2].path(f"/var/mail/vhosts/{DOMAINS[0]}").exists()
    assert not f.tnodes[IMAP1].path(f"/var/mail/vhosts/{DOMAINS[1]}").exists()

    # The placement is sticky: a third domain goes to the emptier node, the first two
    # stay where their mail is.
    response = client.post(
        reverse("mail-domain-list"),
        {"name": "third.example", "customer": customer_id},
        format="json",
    )
    assert response.status_code == 201, response.content
    again = dict(DomainPlacement.objects.values_list("domain__name", "node_id"))
    assert again[DOMAINS[0]] == imap1.pk and again[DOMAINS[1]] == imap2.pk
    assert again["third.example"] == imap1.pk  # 1-1 tie: the lower id
