"""Renderers refuse names that could break out of a config file or command."""

from __future__ import annotations

import pytest
from django.urls import reverse

from deploy.services.base import DesiredState, DomainData, MailboxData, NodeView
from deploy.services.courier import SERVICE as COURIER
from deploy.services.postfix import SERVICE as POSTFIX
from deploy.services.postfix.safe import UnsafeName
from mail.models import Domain, Mailbox
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain

NODE = NodeView(1, "mx1.example.net", "10.0.0.2", ("smtp", "imap"), "debian", 1)
HASH = "$6$saltsalt$" + "a" * 86
BAD_DOMAINS = ["$(id).example.com", "evil.example\nrelayhost = x", "a b.example", "x|y.example"]
BAD_LOCALS = ["$(reboot)", "a\tb", "a|uid=0", "../../etc", "-rf", "a\nb"]


def state(domain: str = "ok.example", local: str = "alice") -> DesiredState:
    protocols = {"imaps": True, "pop3s": True, "submission": True, "smtps": True}
    return DesiredState(
        node=NODE,
        domains=[DomainData(domain, True, "", (), None, {})],
        mailboxes=[
            MailboxData(
                f"{local}@{domain}", local, domain, HASH, 100, True, False, True, True, 0,
                (), True, protocols,
            )
        ],
    )  # fmt: skip


def test_valid_state_renders() -> None:
    files = {f.path: f.content for f in POSTFIX.render(state()) + COURIER.render(state())}
    assert b"alice@ok.example ok.example/alice/Maildir/" in files["/etc/postfix/virtual_mailboxes"]
    assert b"alice@ok.example\tuid=5000" in files["/etc/courier/userdb"]
    assert b"IMAPDSTART=NO" in files["/etc/courier/imapd"]  # 143 closed by default


@pytest.mark.parametrize("name", BAD_DOMAINS)
def test_renderers_refuse_crafted_domains(name: str) -> None:
    for service in (POSTFIX, COURIER):
        with pytest.raises(UnsafeName):
            service.render(state(domain=name))


@pytest.mark.parametrize("local", BAD_LOCALS)
def test_renderers_refuse_crafted_local_parts(local: str) -> None:
    for service in (POSTFIX, COURIER):
        with pytest.raises(UnsafeName):
            service.render(state(local=local))


@pytest.mark.django_db
def test_api_refuses_crafted_names_before_anything_reaches_a_node(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    for name in BAD_DOMAINS:
        response = client.post(
            reverse("mail-domain-list"), {"name": name, "customer": cast.ministry.pk}, format="json"
        )
        assert response.status_code == 400, name
    assert not Domain.objects.exists()
    domain = make_domain(cast.ministry, "ok.example")
    for local in BAD_LOCALS:
        response = client.post(
            reverse("mail-mailbox-list"),
            {"domain": domain.pk, "localPart": local, "password": "Tulip-Anvil-Sonnet-58"},
            format="json",
        )
        assert response.status_code == 400, local
    assert not Mailbox.objects.exists()
