"""Portal mail forms show every field's error in one round trip, and change nothing.

Issue 11: the mailbox form showed one error at a time and never flagged a 5-character
password. Each test posts several bad fields and expects every message on the page.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from audit.models import AuditRecord
from mail import choices
from mail.models import Alias, Domain, Mailbox
from tests.fixtures import Cast
from tests.mail.helpers import make_domain, make_mailbox
from tests.portal.conftest import form_errors, login  # noqa: F401

pytestmark = pytest.mark.django_db

INHERIT_ALL = {f"access_{code}": choices.INHERIT for code in choices.PROTOCOL_CODES}


@pytest.fixture
def domain(cast: Cast) -> Domain:
    return make_domain(cast.ministry, "ministry.example")


def _counts() -> tuple[int, int, int, int]:
    return (
        Domain.objects.count(),
        Mailbox.objects.count(),
        Alias.objects.count(),
        AuditRecord.objects.count(),
    )


def test_mailbox_create_flags_every_bad_field_at_once(
    cast: Cast,
    domain: Domain,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    client = login(cast.sub_admin)
    before = _counts()
    response = client.post(
        reverse("mail:mailbox-create", args=[domain.pk]),
        {
            **INHERIT_ALL,
            "local_part": "bad name",
            "password": "short",  # five characters
            "quota_mb": 0,
            "retention_days": 30,
            "forward_to": "not an address",
        },
    )
    assert response.status_code == 200
    errors = form_errors(response)
    assert {"local_part", "password", "quota_mb", "forward_to"} <= set(errors), errors
    assert "at least 10 characters" in " ".join(errors["password"])
    page = response.content.decode()
    for messages in errors.values():
        for message in messages:
            assert escape(message) in page, message
    # A summary on top links each field in error.
    assert "Correct the marked fields:" in page
    for field in ("local_part", "password", "quota_mb", "forward_to"):
        assert f'href="#id_{field}"' in page
    assert _counts() == before


def test_a_taken_address_is_flagged_beside_a_weak_password(
    cast: Cast,
    domain: Domain,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    """Database checks (the address is taken) come in the same round as shape checks."""
    make_mailbox(domain, "taken")
    client = login(cast.sub_admin)
    before = _counts()
    response = client.post(
        reverse("mail:mailbox-create", args=[domain.pk]),
        {
            **INHERIT_ALL,
            "local_part": "taken",
            "password": "Sunny-1",
            "quota_mb": 100,
            "retention_days": 30,
        },
    )
    assert response.status_code == 200
    errors = form_errors(response)
    assert "local_part" in errors and "password" in errors, errors
    assert "already exists" in " ".join(errors["local_part"])
    assert _counts() == before


def test_domain_create_flags_name_contact_and_quota_together(
    cast: Cast,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    client = login(cast.sub_admin)
    before = _counts()
    response = client.post(
        reverse("mail:domain-create"),
        {
            "customer": cast.ministry.pk,
            "name": "$(id).example",
            "contact_email": "nobody at all",
            "default_quota_mb": 0,
            "catch_all": "not an address",
        },
    )
    assert response.status_code == 200
    errors = form_errors(response)
    assert {"name", "contact_email", "default_quota_mb", "catch_all"} <= set(errors), errors
    assert _counts() == before


def test_alias_create_flags_name_and_targets_together(
    cast: Cast,
    domain: Domain,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    client = login(cast.sub_admin)
    before = _counts()
    response = client.post(
        reverse("mail:alias-create", args=[domain.pk]),
        {"local_part": "bad name", "kind": "robot", "targets": "nope"},
    )
    assert response.status_code == 200
    errors = form_errors(response)
    assert {"local_part", "kind", "targets"} <= set(errors), errors
    assert _counts() == before


def test_mailbox_password_form_flags_a_weak_password(
    cast: Cast,
    domain: Domain,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    mailbox = make_mailbox(domain, "alice")
    old_hash = mailbox.password_hash
    client = login(cast.sub_admin)
    response = client.post(
        reverse("mail:mailbox-password", args=[mailbox.pk]), {"password": "abc12"}
    )
    assert response.status_code == 200
    assert "password" in form_errors(response)
    mailbox.refresh_from_db()
    assert mailbox.password_hash == old_hash


def test_api_reports_every_bad_mailbox_field_at_once(cast: Cast, domain: Domain) -> None:
    """The action layer collects: the API answers all bad fields in one 400 as well."""
    from tests.fixtures import token_client

    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("mail-mailbox-list"),
        {
            "domain": domain.pk,
            "localPart": "bad name",
            "password": "short",
            "quotaMb": 100,
            "forwardTo": ["nope"],
        },
        format="json",
    )
    assert response.status_code == 400, response.content
    body = str(response.json())
    for field in ("localPart", "password", "forwardTo"):
        assert field in body, (field, body)
    assert not Mailbox.objects.exists()
