"""Protocol access and filtering policy inherited through customer, domain and mailbox."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from mail import actions, choices, policy
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox

pytestmark = pytest.mark.django_db


def test_protocol_defaults_follow_the_product_sheet(cast: Cast) -> None:
    mailbox = make_mailbox(make_domain(cast.department, "department.example"), "a")
    effective = policy.mailbox_protocols(mailbox)
    assert effective["imap"]["allowed"] is False and effective["pop3"]["allowed"] is False
    assert all(
        effective[c]["allowed"]
        for c in ("smtp", "smtps", "submission", "imaps", "pop3s", "activesync", "webmail", "dav")
    )
    assert effective["imaps"]["source"]["level"] == "default"
    # Cloud files use storage: off until a level of the tree turns them on.
    assert effective["files"]["allowed"] is False


def test_protocol_access_through_three_customer_levels_domain_and_mailbox(cast: Cast) -> None:
    domain = make_domain(cast.department, "department.example")
    mailbox = make_mailbox(domain, "a")
    actions.update_customer_policy(
        actor=None, customer=cast.government, protocol_access={"imap": "allow", "pop3s": "deny"}
    )
    actions.update_customer_policy(
        actor=None, customer=cast.ministry, protocol_access={"imap": "deny"}
    )
    actions.update_customer_policy(
        actor=None, customer=cast.department, protocol_access={"webmail": "deny"}
    )
    got = policy.mailbox_protocols(mailbox)
    assert got["pop3s"] == {
        "allowed": False,
        "source": {"level": "customer", "id": cast.government.pk, "name": "Government"},
    }
    assert got["imap"]["allowed"] is False and got["imap"]["source"]["name"] == "Ministry"
    assert got["webmail"]["allowed"] is False and got["webmail"]["source"]["name"] == "Department"
    actions.update_domain_policy(actor=None, domain=domain, protocol_access={"imap": "allow"})
    got = policy.mailbox_protocols(mailbox)
    assert got["imap"]["allowed"] is True and got["imap"]["source"]["level"] == "domain"
    mailbox = actions.update_mailbox(
        actor=None, mailbox=mailbox, protocol_access={"imap": "deny", "webmail": "allow"}
    )
    got = policy.mailbox_protocols(mailbox)
    assert got["imap"]["source"]["level"] == "mailbox" and got["imap"]["allowed"] is False
    assert got["webmail"]["allowed"] is True
    # Back to inherit: the domain's value shows again.
    mailbox = actions.update_mailbox(
        actor=None, mailbox=mailbox, protocol_access={"imap": "inherit"}
    )
    assert policy.mailbox_protocols(mailbox)["imap"]["source"]["level"] == "domain"
    # The API shows the same effective values and sources.
    body = (
        token_client(cast.sub_admin).get(reverse("mail-mailbox-detail", args=[mailbox.pk])).json()
    )
    assert body["effectiveProtocolAccess"]["imap"]["source"]["level"] == "domain"
    assert body["protocolAccess"]["imap"] == "inherit"
    assert body["protocolAccess"]["webmail"] == "allow"


def test_filtering_policy_through_three_levels_and_a_domain(cast: Cast) -> None:
    domain = make_domain(cast.department, "department.example")
    actions.update_customer_policy(
        actor=None, customer=cast.government, blocked_extensions=["exe", ".ISO"], antivirus=True
    )
    actions.update_customer_policy(actor=None, customer=cast.ministry, spam_hold_score="9.5")
    actions.update_customer_policy(actor=None, customer=cast.department, greylisting=True)
    got = policy.effective_filtering(customer=cast.department, domain=domain)
    assert got["blocked_extensions"]["value"] == ["exe", "iso"]
    assert got["blocked_extensions"]["source"]["name"] == "Government"
    assert got["spam_hold_score"]["value"] == Decimal("9.5")
    assert (
        got["greylisting"]["value"] is True and got["greylisting"]["source"]["name"] == "Department"
    )
    assert got["blocked_mime_types"]["value"] == choices.DEFAULT_BLOCKED_MIME_TYPES
    actions.update_domain_policy(
        actor=None, domain=domain, blocked_extensions=[], greylisting=False
    )
    got = policy.effective_filtering(customer=cast.department, domain=domain)
    assert (
        got["blocked_extensions"]["value"] == []
        and got["blocked_extensions"]["source"]["level"] == "domain"
    )
    assert got["greylisting"]["value"] is False
    # Null inherits again.
    actions.update_domain_policy(actor=None, domain=domain, blocked_extensions=None)
    got = policy.effective_filtering(customer=cast.department, domain=domain)
    assert got["blocked_extensions"]["source"]["name"] == "Government"


def test_default_blocked_extensions_are_sensible() -> None:
    for ext in ("exe", "scr", "js", "vbs", "bat", "cmd", "com", "pif", "jar", "msi"):
        assert ext in choices.DEFAULT_BLOCKED_EXTENSIONS


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"spam_tag_score": "20"}, "spam_hold_score"),
        ({"spam_reject_score": "NaN"}, "spam_reject_score"),
        ({"spam_reject_score": 1e308}, "spam_reject_score"),
        ({"blocked_extensions": ["ex e"]}, "blocked_extensions"),
        ({"blocked_mime_types": ["not a type"]}, "blocked_mime_types"),
        ({"sender_block": ["$(id)@x.org"]}, "sender_block"),
        ({"protocol_access": {"telnet": "allow"}}, "protocol_access"),
        ({"protocol_access": {"imap": "maybe"}}, "protocol_access"),
        ({"antivirus": "yes"}, "antivirus"),
    ],
)
def test_bad_policy_values_are_refused(cast: Cast, changes: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        actions.update_customer_policy(actor=None, customer=cast.ministry, **changes)
    assert field in info.value.message_dict


def test_policy_api_bad_types_are_400(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    url = reverse("mail-customer-policy-detail", args=[cast.ministry.pk])
    for payload in (
        {"spamTagScore": "x"},
        {"blockedExtensions": "exe"},
        {"protocolAccess": ["imap"]},
        {"antivirus": {"a": 1}},
        {"senderAllow": ["ok@example.org", 5]},
        {"spamRejectScore": 10**30},
    ):
        response = client.patch(url, payload, format="json")
        assert response.status_code == 400, (payload, response.content)
    body = client.get(url).json()
    assert body["effectiveFiltering"]["antivirus"]["value"] is True
    assert body["protocolAccess"]["imap"] == "inherit"
