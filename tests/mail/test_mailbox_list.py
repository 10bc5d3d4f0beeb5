"""A domain's mailbox list: used space, last login, bulk enable/disable/delete, query count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditRecord
from mail import actions
from mail.models import Alias, Domain, Mailbox
from tests.fixtures import Cast
from tests.mail.helpers import make_domain, make_mailbox
from tests.portal.conftest import login  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def domain(cast: Cast) -> Domain:
    return make_domain(cast.ministry, "ministry.example")


def _list(client: Client, domain: Domain) -> str:
    response = client.get(reverse("mail:domain-detail", args=[domain.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_used_space_bar_unknown_and_last_login(
    cast: Cast,
    domain: Domain,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    measured = make_mailbox(domain, "measured", quota_mb=100)
    make_mailbox(domain, "fresh", quota_mb=100)
    actions.record_used_space({measured.pk: 25 * 1024 * 1024})
    Mailbox.objects.filter(pk=measured.pk).update(last_login_at=timezone.now())
    page = _list(login(cast.sub_admin), domain)
    assert '<meter class="usage"' in page and 'value="25"' in page
    assert "unknown of 100 MB" in page  # never measured
    assert "never" in page  # no login reported for "fresh"
    assert ">None<" not in page and " None " not in page


@pytest.mark.parametrize("page", ["mail:domain-detail", "mail:mailbox-search"])
def test_lists_run_the_same_number_of_queries_for_5_or_40_mailboxes(
    cast: Cast,
    domain: Domain,
    login: Callable[..., Client],  # noqa: F811
    django_assert_max_num_queries: Any,
    page: str,
) -> None:
    client = login(cast.sub_admin)
    url = reverse(page, args=[domain.pk]) if page == "mail:domain-detail" else reverse(page)
    for i in range(5):
        make_mailbox(domain, f"user{i}")
    client.get(url)  # warm the session and caches
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    for i in range(5, 40):
        make_mailbox(domain, f"user{i}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(url)
    assert response.content.decode().count("@ministry.example</a>") == 40


def test_bulk_disable_then_enable_audits_each_mailbox(
    cast: Cast,
    domain: Domain,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    boxes = [make_mailbox(domain, name) for name in ("a1", "a2", "a3")]
    client = login(cast.sub_admin)
    url = reverse("mail:mailbox-bulk", args=[domain.pk])
    chosen = [boxes[0].pk, boxes[1].pk]
    response = client.post(url, {"action": "disable", "selected": chosen}, follow=True)
    assert "2 mailboxes disabled." in response.content.decode()
    assert (
        list(Mailbox.objects.filter(is_enabled=False).order_by("pk").values_list("pk", flat=True))
        == chosen
    )
    updates = AuditRecord.objects.filter(
        action="mail.mailbox.update", object_id__in=[str(p) for p in chosen]
    )
    assert updates.count() == 2
    response = client.post(url, {"action": "enable", "selected": chosen}, follow=True)
    assert "2 mailboxes enabled." in response.content.decode()
    assert not Mailbox.objects.filter(is_enabled=False).exists()


def test_bulk_delete_asks_once_then_deletes(
    cast: Cast,
    domain: Domain,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    boxes = [make_mailbox(domain, name) for name in ("d1", "d2", "keep")]
    client = login(cast.sub_admin)
    url = reverse("mail:mailbox-bulk", args=[domain.pk])
    chosen = [boxes[0].pk, boxes[1].pk]
    response = client.post(url, {"action": "delete", "selected": chosen})
    assert response.status_code == 200  # the confirmation step
    page = response.content.decode()
    assert "d1@ministry.example" in page and "d2@ministry.example" in page
    assert "keep@ministry.example" not in page
    assert Mailbox.objects.filter(domain=domain).count() == 3
    response = client.post(url, {"action": "delete", "selected": chosen, "confirm": "1"})
    assert response.status_code == 302
    assert list(Mailbox.objects.filter(domain=domain).values_list("local_part", flat=True)) == [
        "keep"
    ]
    assert AuditRecord.objects.filter(action="mail.mailbox.delete").count() == 2


def test_bulk_ignores_mailboxes_outside_scope_or_domain(
    cast: Cast,
    domain: Domain,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    mine = make_mailbox(domain, "mine")
    other_domain = make_domain(cast.ministry, "other.example")
    elsewhere = make_mailbox(other_domain, "elsewhere")
    shop = make_domain(cast.shop, "shop.example")
    foreign = make_mailbox(shop, "foreign")
    client = login(cast.sub_admin)
    url = reverse("mail:mailbox-bulk", args=[domain.pk])
    client.post(
        url,
        {"action": "disable", "selected": [mine.pk, elsewhere.pk, foreign.pk, "x", "9" * 30]},
    )
    assert list(Mailbox.objects.filter(is_enabled=False).values_list("pk", flat=True)) == [mine.pk]
    # An outsider cannot reach the domain at all.
    outsider = login(cast.sibling_admin)
    assert outsider.post(url, {"action": "disable", "selected": [mine.pk]}).status_code == 404


def test_bulk_needs_the_manage_permission(
    cast: Cast,
    domain: Domain,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    box = make_mailbox(domain, "viewer-target")
    client = login(cast.ministry_viewer)
    page = _list(client, domain)
    assert 'name="selected"' not in page
    url = reverse("mail:mailbox-bulk", args=[domain.pk])
    assert client.post(url, {"action": "disable", "selected": [box.pk]}).status_code == 403
    box.refresh_from_db()
    assert box.is_enabled


def test_a_refused_mailbox_leaves_the_whole_bulk_delete_undone(
    cast: Cast,
    domain: Domain,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    """postmaster@ may only be removed by the root customer: nothing else goes either."""
    plain = make_mailbox(domain, "plain")
    actions.delete_alias(
        actor=None, alias=Alias.objects.get(domain=domain, local_part="postmaster")
    )
    reserved = make_mailbox(domain, "postmaster")
    client = login(cast.sub_admin)
    url = reverse("mail:mailbox-bulk", args=[domain.pk])
    response = client.post(
        url, {"action": "delete", "selected": [plain.pk, reserved.pk], "confirm": "1"}, follow=True
    )
    assert response.status_code == 200
    assert Mailbox.objects.filter(pk__in=[plain.pk, reserved.pk]).count() == 2
    assert not AuditRecord.objects.filter(action="mail.mailbox.delete").exists()


def test_pages_say_what_to_create_first_when_empty(
    cast: Cast,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    client = login(cast.sub_admin)
    for name in ("mail:home", "mail:mailbox-search", "mail:import"):
        page = client.get(reverse(name)).content.decode()
        assert "create a domain first" in page or "create one first" in page, name
    domain = make_domain(cast.ministry, "ministry.example")
    page = _list(client, domain)
    assert "No mailboxes yet." in page and "Create the first" in page
    assert "create a domain first" not in client.get(reverse("mail:import")).content.decode()


def test_mailbox_page_links_its_history(
    cast: Cast,
    domain: Domain,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    mailbox = make_mailbox(domain, "historic")
    page = login(cast.sub_admin).get(reverse("mail:mailbox-edit", args=[mailbox.pk]))
    history = reverse("audit:object-history", args=["mail.mailbox", mailbox.pk])
    assert history in page.content.decode()
    assert login(cast.sub_admin).get(history).status_code == 200
