"""Portal pages of the mail app: login required, 404 outside scope, 200 inside, form errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from mail import actions, choices
from mail.models import Alias, Domain, Mailbox
from tests.fixtures import Cast
from tests.mail.helpers import make_alias, make_domain, make_mailbox
from tests.portal.conftest import form_errors, login  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def objects(cast: Cast) -> dict[str, Any]:
    domain = make_domain(cast.ministry, "ministry.example")
    mailbox = make_mailbox(domain, "alice")
    alias = make_alias(domain, "info", ["alice@ministry.example"])
    domain_alias = actions.create_domain_alias(
        actor=None, domain=domain, name="ministry.example.org"
    )
    return {"domain": domain, "mailbox": mailbox, "alias": alias, "domain_alias": domain_alias}


def pages(cast: Cast, o: dict[str, Any]) -> list[str]:
    d, m, a = o["domain"].pk, o["mailbox"].pk, o["alias"].pk
    return [
        reverse("mail:domain-detail", args=[d]),
        reverse("mail:domain-aliases", args=[d]),
        reverse("mail:domain-policy", args=[d]),
        reverse("mail:domain-dkim", args=[d]),
        reverse("mail:domain-edit", args=[d]),
        reverse("mail:domain-delete", args=[d]),
        reverse("mail:domain-export", args=[d]),
        reverse("mail:domain-alias-create", args=[d]),
        reverse("mail:domain-alias-delete", args=[o["domain_alias"].pk]),
        reverse("mail:mailbox-create", args=[d]),
        reverse("mail:alias-create", args=[d]),
        reverse("mail:mailbox-edit", args=[m]),
        reverse("mail:mailbox-password", args=[m]),
        reverse("mail:mailbox-delete", args=[m]),
        reverse("mail:mailbox-autoresponder", args=[m]),
        reverse("mail:mailbox-filters", args=[m]),
        reverse("mail:alias-edit", args=[a]),
        reverse("mail:alias-delete", args=[a]),
        reverse("mail:customer", args=[cast.ministry.pk]),
        reverse("mail:addressbook-export", args=[cast.ministry.pk]),
    ]


GLOBAL_PAGES = [
    "mail:home",
    "mail:domain-create",
    "mail:mailbox-search",
    "mail:import",
    "mail:export",
]


def test_anonymous_is_sent_to_login(cast: Cast, objects: dict[str, Any], client: Client) -> None:
    for url in [*pages(cast, objects), *[reverse(n) for n in GLOBAL_PAGES]]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert reverse("portal:login") in response["Location"], url


def test_outsider_gets_404_everywhere(
    cast: Cast,
    objects: dict[str, Any],
    login: Callable[..., Client],  # noqa: F811
) -> None:
    client = login(cast.sibling_admin)
    for url in pages(cast, objects):
        assert client.get(url).status_code == 404, url
        assert client.post(url, {}).status_code in (404, 405), url
    assert Domain.objects.filter(pk=objects["domain"].pk).exists()
    assert Mailbox.objects.filter(pk=objects["mailbox"].pk).exists()


def test_insider_sees_every_page(
    cast: Cast,
    objects: dict[str, Any],
    login: Callable[..., Client],  # noqa: F811
) -> None:
    client = login(cast.sub_admin)
    for url in [*pages(cast, objects), *[reverse(n) for n in GLOBAL_PAGES]]:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        if response.get("Content-Type", "").startswith("text/html"):
            body = response.content.decode()
            assert "<script>" not in body and 'style="' not in body, url


def test_lists_show_in_scope_objects_only(
    cast: Cast,
    objects: dict[str, Any],
    login: Callable[..., Client],  # noqa: F811
) -> None:
    make_domain(cast.shop, "shop.example")
    client = login(cast.sub_admin)
    body = client.get(reverse("mail:home")).content.decode()
    assert "ministry.example" in body and "shop.example" not in body
    body = client.get(reverse("mail:mailbox-search"), {"q": "ali"}).content.decode()
    assert "alice@" in body


def test_domain_form_refuses_bad_names(
    cast: Cast,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    client = login(cast.sub_admin)
    response = client.post(
        reverse("mail:domain-create"),
        {"customer": cast.ministry.pk, "name": "$(id).example.com", "default_quota_mb": 1024},
    )
    assert response.status_code == 200
    assert "name" in form_errors(response)
    response = client.post(
        reverse("mail:domain-create"),
        {"customer": cast.ministry.pk, "name": "München.example", "default_quota_mb": 1024},
    )
    assert response.status_code == 302
    assert Domain.objects.get(name="xn--mnchen-3ya.example").unicode_name == "münchen.example"


def test_mailbox_form_errors_and_effective_access(
    cast: Cast,
    objects: dict[str, Any],
    login: Callable[..., Client],  # noqa: F811
) -> None:
    client = login(cast.sub_admin)
    url = reverse("mail:mailbox-create", args=[objects["domain"].pk])
    data = {
        "local_part": "bad name",
        "password": "short",
        "retention_days": 30,
        **{f"access_{c}": "inherit" for c in choices.PROTOCOL_CODES},
    }
    response = client.post(url, data)
    assert response.status_code == 200
    errors = form_errors(response)
    assert "local_part" in errors
    data.update(local_part="bob", password="Granite-Meadow-Falcon-19", access_imap="allow")
    response = client.post(url, data)
    assert response.status_code == 302, form_errors(response)
    bob = Mailbox.objects.get(email="bob@ministry.example")
    assert bob.protocol_access == {"imap": "allow"}
    page = client.get(reverse("mail:mailbox-edit", args=[bob.pk])).content.decode()
    assert "this mailbox" in page and "built-in default" in page


def test_non_root_cannot_remove_postmaster_in_portal(
    cast: Cast,
    objects: dict[str, Any],
    login: Callable[..., Client],  # noqa: F811
) -> None:
    postmaster = Alias.objects.get(email="postmaster@ministry.example")
    client = login(cast.sub_admin)
    response = client.post(reverse("mail:alias-delete", args=[postmaster.pk]))
    assert response.status_code == 200
    assert form_errors(response)
    assert Alias.objects.filter(pk=postmaster.pk).exists()


def test_raw_sieve_refused_with_parser_message(
    cast: Cast,
    objects: dict[str, Any],
    login: Callable[..., Client],  # noqa: F811
) -> None:
    client = login(cast.sub_admin)
    url = reverse("mail:mailbox-filters-raw", args=[objects["mailbox"].pk])
    response = client.post(url, {"name": "x", "script": "if foo { bar; }", "is_active": "on"})
    assert response.status_code == 200
    assert "unknown command" in str(response.context["raw_form"].errors).lower()


def test_view_only_admin_cannot_post(
    cast: Cast,
    objects: dict[str, Any],
    login: Callable[..., Client],  # noqa: F811
) -> None:
    client = login(cast.ministry_viewer)
    assert client.get(reverse("mail:home")).status_code == 200
    assert client.get(reverse("mail:mailbox-edit", args=[objects["mailbox"].pk])).status_code == 200
    response = client.post(reverse("mail:mailbox-edit", args=[objects["mailbox"].pk]), {})
    assert response.status_code == 403


def test_absurd_ids_and_cursors_are_not_errors(
    cast: Cast,
    objects: dict[str, Any],
    login: Callable[..., Client],  # noqa: F811
) -> None:
    client = login(cast.sub_admin)
    assert client.get("/mail/domains/99999999999999999999999/").status_code == 404
    assert client.get("/mail/mailboxes/0/").status_code == 404
    response = client.get(reverse("mail:mailbox-search"), {"cursor": "!!!", "q": "a\x00b"})
    assert response.status_code == 200
    response = client.get(reverse("mail:home"), {"cursor": "eyJ4IjoxfQ"})
    assert response.status_code == 200


ACCESS_INHERIT = {f"access_{c}": "inherit" for c in choices.PROTOCOL_CODES}


@pytest.mark.parametrize(
    ("page", "data", "field"),
    [
        ("domain-edit", {"default_quota_mb": 0}, "default_quota_mb"),
        ("domain-edit", {"default_quota_mb": 10, "catch_all": "not an address"}, "catch_all"),
        ("domain-alias-create", {"name": "a..b"}, "name"),
        ("alias-create", {"local_part": "x", "kind": "alias", "targets": "nope"}, "targets"),
        (
            "domain-policy",
            {**ACCESS_INHERIT, "override_blocked_extensions": "on", "blocked_extensions": "ex e"},
            "blocked_extensions",
        ),
        ("mailbox-password", {"password": "Good-Password-1\\|uid=0"}, "password"),
        (
            "mailbox-autoresponder",
            {"is_enabled": "on", "subject": "", "body": "x", "interval_days": 7},
            "subject",
        ),
        (
            "mailbox-filters",
            {
                "field": "from",
                "op": "contains",
                "value": "x",
                "action": "fileinto",
                "argument": "../etc",
            },
            None,
        ),
        (
            "mailbox-edit",
            {**ACCESS_INHERIT, "quota_mb": 10, "retention_days": 30, "forward_to": "self@"},
            "forward_to",
        ),
    ],
)
def test_forms_show_errors_for_bad_input(
    cast: Cast,
    objects: dict[str, Any],
    login: Callable[..., Client],  # noqa: F811
    page: str,
    data: dict,
    field: str | None,
) -> None:
    target = {
        "domain": objects["domain"].pk,
        "mailbox": objects["mailbox"].pk,
    }["mailbox" if page.startswith("mailbox") else "domain"]
    client = login(cast.sub_admin)
    response = client.post(reverse(f"mail:{page}", args=[target]), data)
    assert response.status_code == 200, (page, response.status_code)
    errors = form_errors(response)
    assert errors, page
    if field is not None:
        assert field in errors, errors
