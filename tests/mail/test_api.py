"""Mail API behaviour: constant queries per page, bad input, DKIM, exclusivity, address book."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from mail import actions
from mail.models import Alias, DkimKey, Domain, Mailbox
from mail.signals import mail_changed
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_alias, make_domain, make_mailbox

pytestmark = pytest.mark.django_db


def _pages(client: Any, url: str, params: dict) -> list[dict]:
    rows = []
    while url:
        body = client.get(url, params).json()
        rows.extend(body["results"])
        url, params = body["next"], {}
    return rows


@pytest.mark.parametrize("page_size", [5, 50])
def test_mailbox_list_runs_a_constant_number_of_queries(
    cast: Cast, django_assert_max_num_queries: Any, page_size: int
) -> None:
    for i, customer in enumerate([cast.ministry, cast.department, cast.government]):
        domain = make_domain(customer, f"d{i}.example")
        for j in range(20):
            Mailbox.objects.create(
                customer=customer,
                customer_path=customer.path,
                domain=domain,
                local_part=f"u{j}",
                email=f"u{j}@d{i}.example",
                password_hash="$6$x$y",
            )
    client = token_client(cast.sub_admin)
    client.get(reverse("mail-mailbox-list"))  # token first use is audited once
    with django_assert_max_num_queries(4):
        body = client.get(reverse("mail-mailbox-list"), {"pageSize": page_size}).json()
    assert len(body["results"]) == page_size
    with django_assert_max_num_queries(4):
        client.get(reverse("mail-domain-list"), {"pageSize": page_size})
    with django_assert_max_num_queries(4):
        client.get(reverse("mail-alias-list"), {"pageSize": page_size})


def test_keyset_pages_walk_everything_in_order(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    other = make_domain(cast.department, "dept.example")
    for name in ("carol", "alice", "bob", "dave", "erin"):
        make_mailbox(domain, name)
        make_mailbox(other, name)
    client = token_client(cast.sub_admin)
    url = reverse("mail-mailbox-list")
    rows = _pages(client, url, {"pageSize": 3})
    assert len(rows) == 10
    keys = [(r["customer"], r["email"]) for r in rows]
    assert len(set(keys)) == 10
    found = _pages(client, url, {"pageSize": 2, "search": "b"})
    assert [r["email"] for r in found] == ["bob@dept.example", "bob@ministry.example"]
    in_domain = _pages(client, url, {"pageSize": 2, "domain": domain.pk})
    assert [r["localPart"] for r in in_domain] == ["alice", "bob", "carol", "dave", "erin"]
    response = client.get(url, {"cursor": "garbage!"})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"localPart": "bad name"}, "localPart"),
        ({"localPart": "x\x00y"}, "localPart"),
        ({"localPart": ["x"]}, "localPart"),
        ({"quotaMb": 10**20}, "quotaMb"),
        ({"quotaMb": "lots"}, "quotaMb"),
        ({"retentionDays": 0}, "retentionDays"),
        ({"forwardTo": "x@example.org"}, "forwardTo"),
        ({"forwardTo": ["not an address"]}, "forwardTo"),
        ({"protocolAccess": {"imap": "yes"}}, "protocolAccess"),
        ({"protocolAccess": {"telnet": "allow"}}, "protocolAccess"),
        ({"domain": 2**70}, "domain"),
        ({"domain": "abc"}, "domain"),
        ({"isEnabled": "maybe"}, "isEnabled"),
        ({"passwordHash": "$6$x$y"}, "passwordHash"),
        ({"displayName": "line\nbreak"}, "displayName"),
    ],
)
def test_bad_mailbox_input_is_a_400_that_changes_nothing(
    cast: Cast, payload: dict, field: str
) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    body = {"domain": domain.pk, "localPart": "eve", "password": "Tulip-Anvil-Sonnet-58", **payload}
    response = token_client(cast.sub_admin).post(reverse("mail-mailbox-list"), body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not Mailbox.objects.exists()


@pytest.mark.parametrize(
    "name", ["$(id).example.com", "a..b", "x" * 254, "com", "-x.example", "x_y.example", "a\x00.b"]
)
def test_bad_domains_are_400s(cast: Cast, name: str) -> None:
    response = token_client(cast.sub_admin).post(
        reverse("mail-domain-list"), {"name": name, "customer": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 400
    assert "name" in response.json()["errors"]
    assert not Domain.objects.exists()


def test_domain_gets_postmaster_and_abuse_that_only_root_removes(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("mail-domain-list"),
        {"name": "Ünïcode.example", "customer": cast.ministry.pk},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["unicodeName"] == "ünïcode.example"
    domain = Domain.objects.get(pk=response.json()["id"])
    required = Alias.objects.filter(domain=domain, is_system=True)
    assert sorted(a.local_part for a in required) == ["abuse", "postmaster"]
    assert required[0].targets == ["sub.admin@example.org"]
    postmaster = required.get(local_part="postmaster")
    url = reverse("mail-alias-detail", args=[postmaster.pk])
    assert client.delete(url).status_code == 403
    assert client.patch(url, {"isEnabled": False}, format="json").status_code == 403
    assert client.patch(url, {"targets": ["boss@example.org"]}, format="json").status_code == 200
    assert token_client(cast.root_admin).delete(url).status_code == 204
    # A domain already registered (any case, any owner) is refused.
    response = token_client(cast.sibling_admin).post(
        reverse("mail-domain-list"),
        {"name": domain.name.upper(), "customer": cast.isp.pk},
        format="json",
    )
    assert response.status_code == 400


def test_a_mailbox_cannot_be_an_alias_and_vice_versa(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    make_mailbox(domain, "alice")
    make_alias(domain, "sales", ["alice@ministry.example"])
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("mail-alias-list"),
        {"domain": domain.pk, "localPart": "alice", "targets": ["x@example.org"]},
        format="json",
    )
    assert response.status_code == 400 and "localPart" in response.json()["errors"]
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": domain.pk, "localPart": "sales", "password": "Tulip-Anvil-Sonnet-58"},
        format="json",
    )
    assert response.status_code == 400 and "localPart" in response.json()["errors"]
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": domain.pk, "localPart": "postmaster", "password": "Tulip-Anvil-Sonnet-58"},
        format="json",
    )
    assert response.status_code == 400


def test_dkim_generation_rotation_and_records_never_show_the_private_key(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("mail-dkim-key-list"), {"domain": domain.pk, "selector": "Bad_Sel"}, format="json"
    )
    assert response.status_code == 400 and "selector" in response.json()["errors"]
    response = client.post(
        reverse("mail-dkim-key-list"), {"domain": domain.pk, "selector": "mail1"}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["recordName"] == "mail1._domainkey.ministry.example."
    assert body["recordValue"].startswith("v=DKIM1; k=rsa; p=MII")
    key = DkimKey.objects.get(pk=body["id"])
    assert key.private_key.startswith("-----BEGIN PRIVATE KEY-----")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT private_key FROM mail_dkimkey WHERE id = %s", [key.pk])
        stored = cursor.fetchone()[0]
    assert "PRIVATE KEY" not in stored  # encrypted at rest
    assert "PRIVATE" not in str(client.get(reverse("mail-dkim-key-detail", args=[key.pk])).json())
    response = client.post(
        reverse("mail-dkim-key-rotate", args=[key.pk]), {"selector": "mail2"}, format="json"
    )
    assert response.status_code == 201
    key.refresh_from_db()
    assert key.state == "retired"
    records = client.get(reverse("mail-domain-dns", args=[domain.pk])).json()
    purposes = [r["purpose"] for r in records]
    assert purposes == ["dkim-active", "dkim-retired", "spf", "dmarc"]
    assert records[3]["name"] == "_dmarc.ministry.example."
    assert all(len(part) <= 257 for part in records[0]["zone"].split(" ") if part.startswith('"'))


def test_address_book_pages_and_vcard(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    make_mailbox(domain, "alice", display_name="Alice, Smith; Jr")
    make_mailbox(domain, "hidden", hide_from_address_book=True)
    make_mailbox(domain, "bob")
    make_alias(domain, "team", ["alice@ministry.example"], kind="group", name="Team")
    make_alias(domain, "plain", ["alice@ministry.example"])
    client = token_client(cast.sub_admin)
    entries = _pages(
        client, reverse("mail-address-book-entries", args=[cast.ministry.pk]), {"pageSize": 1}
    )
    assert [e["email"] for e in entries] == [
        "alice@ministry.example",
        "bob@ministry.example",
        "team@ministry.example",
    ]
    assert entries[2]["kind"] == "group" and entries[2]["members"] == ["alice@ministry.example"]
    response = client.get(reverse("mail-address-book-vcard", args=[cast.ministry.pk]))
    text = b"".join(response.streaming_content).decode()
    assert text.count("BEGIN:VCARD") == 3 and "VERSION:4.0" in text
    assert "FN:Alice\\, Smith\\; Jr" in text and "KIND:group" in text
    assert client.get(reverse("mail-address-book-vcard", args=[cast.isp.pk])).status_code == 404


def test_every_change_announces_mail_changed_after_commit(
    cast: Cast, django_capture_on_commit_callbacks: Any
) -> None:
    seen: list[dict] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        seen.append(kwargs)

    mail_changed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            domain = make_domain(cast.ministry, "ministry.example")
            mailbox = make_mailbox(domain, "alice")
            actions.update_mailbox(actor=None, mailbox=mailbox, can_send=False)
    finally:
        mail_changed.disconnect(receiver)
    assert [s["kind"] for s in seen] == ["domain", "mailbox", "mailbox"]
    assert all(s["customer_path"] == cast.ministry.path for s in seen)
    assert seen[1]["domain_ids"] == [domain.pk]


def test_view_only_and_read_only_tokens_cannot_write(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    for client in (
        token_client(cast.ministry_viewer),
        token_client(cast.sub_admin, read_only=True),
    ):
        assert client.get(reverse("mail-mailbox-list")).status_code == 200
        response = client.post(
            reverse("mail-mailbox-list"),
            {"domain": domain.pk, "localPart": "x", "password": "Tulip-Anvil-Sonnet-58"},
            format="json",
        )
        assert response.status_code == 403
