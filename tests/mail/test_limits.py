"""Resource limits along a deep tree, including concurrent creates that would exceed one."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, connections
from django.urls import reverse

from mail import actions, limits
from mail.models import Mailbox, MailUsage
from tenants import actions as tenant_actions
from tenants import limit_actions
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_alias, make_domain, make_mailbox

pytestmark = pytest.mark.django_db


def test_limit_at_an_ancestor_counts_the_whole_subtree(cast: Cast) -> None:
    limit_actions.set_limits(actor=None, customer=cast.government, max_mailboxes=3)
    ministry = make_domain(cast.ministry, "ministry.example")
    department = make_domain(cast.department, "department.example")
    make_mailbox(ministry, "a")
    make_mailbox(department, "b")
    make_mailbox(department, "c")
    with pytest.raises(ValidationError) as info:
        make_mailbox(ministry, "d")
    message = info.value.message_dict["limit"][0]
    assert "3 mailboxes" in message and "Government" in message
    # Outside Government nothing is limited.
    make_mailbox(make_domain(cast.shop, "shop.example"), "free")
    assert not Mailbox.objects.filter(email="d@ministry.example").exists()


def test_refusal_hides_the_name_of_a_customer_above_the_actor(cast: Cast) -> None:
    limit_actions.set_limits(actor=None, customer=cast.provider, max_domains=1)
    make_domain(cast.shop, "shop.example")
    with pytest.raises(ValidationError) as info:
        actions.create_domain(actor=cast.sub_admin, customer=cast.ministry, name="m.example")
    message = info.value.message_dict["limit"][0]
    assert "Provider" not in message and "above yours" in message
    response = token_client(cast.sub_admin).post(
        reverse("mail-domain-list"),
        {"name": "m.example", "customer": cast.ministry.pk},
        format="json",
    )
    assert response.status_code == 400
    assert "1 domains" in response.json()["errors"]["limit"][0]


def test_quota_limit_counts_total_quota(cast: Cast) -> None:
    limit_actions.set_limits(actor=None, customer=cast.ministry, max_quota_gb=2)
    domain = make_domain(cast.department, "department.example", default_quota_mb=1024)
    mailbox = make_mailbox(domain, "a")
    make_mailbox(domain, "b")
    with pytest.raises(ValidationError) as info:
        make_mailbox(domain, "c")
    assert "2 GB" in info.value.message_dict["quota_mb"][0]
    with pytest.raises(ValidationError):
        actions.update_mailbox(actor=None, mailbox=mailbox, quota_mb=1025)
    actions.update_mailbox(actor=None, mailbox=mailbox, quota_mb=512)
    make_mailbox(domain, "c", quota_mb=512)


def test_a_child_cannot_get_more_than_its_parent_has_left(cast: Cast) -> None:
    limit_actions.set_limits(actor=None, customer=cast.government, max_mailboxes=10)
    ministry = make_domain(cast.ministry, "ministry.example")
    gov = make_domain(cast.government, "gov.example")
    for i in range(4):
        make_mailbox(gov, f"g{i}")
    make_mailbox(ministry, "m0")
    # Government has 10, uses 4 outside Ministry: Ministry can be given at most 6.
    with pytest.raises(ValidationError) as info:
        limit_actions.set_limits(actor=cast.root_admin, customer=cast.ministry, max_mailboxes=7)
    assert "At most 6" in info.value.message_dict["max_mailboxes"][0]
    assert "Government" in info.value.message_dict["max_mailboxes"][0]
    limit_actions.set_limits(actor=cast.root_admin, customer=cast.ministry, max_mailboxes=6)
    # Department (grandchild) is bounded by both: Ministry has 6, uses 1 outside Department.
    with pytest.raises(ValidationError):
        limit_actions.set_limits(actor=cast.sub_admin, customer=cast.department, max_mailboxes=6)
    limit_actions.set_limits(actor=cast.sub_admin, customer=cast.department, max_mailboxes=5)
    # Not below what is already used.
    with pytest.raises(ValidationError) as info:
        limit_actions.set_limits(actor=cast.root_admin, customer=cast.ministry, max_mailboxes=0)
    assert "already uses 1" in info.value.message_dict["max_mailboxes"][0]


def test_an_administrator_cannot_raise_their_own_limit(cast: Cast) -> None:
    limit_actions.set_limits(actor=None, customer=cast.government, max_domains=1)
    with pytest.raises(PermissionDenied):
        limit_actions.set_limits(actor=cast.sub_admin, customer=cast.government, max_domains=100)
    response = token_client(cast.sub_admin).patch(
        reverse("mail-limit-detail", args=[cast.government.pk]), {"maxDomains": 5}, format="json"
    )
    assert response.status_code == 403


def test_usage_follows_deletes_and_system_aliases_do_not_count(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    mailbox = make_mailbox(domain, "a", quota_mb=100)
    alias = make_alias(domain, "info", ["a@ministry.example"])
    usage = MailUsage.objects.get(pk=cast.ministry.pk)
    assert (usage.domains, usage.mailboxes, usage.aliases, usage.quota_mb) == (1, 1, 1, 100)
    actions.delete_alias(actor=None, alias=alias)
    actions.delete_mailbox(actor=None, mailbox=mailbox)
    usage.refresh_from_db()
    assert (usage.mailboxes, usage.aliases, usage.quota_mb) == (0, 0, 0)
    before = limits.usage_of_subtrees([cast.provider.path])
    limits.recount()
    assert limits.usage_of_subtrees([cast.provider.path]) == before


def test_moving_a_customer_keeps_its_usage_with_it(cast: Cast) -> None:
    make_mailbox(make_domain(cast.department, "department.example"), "a")
    tenant_actions.move_customer(actor=None, customer=cast.department, new_parent=cast.isp)
    assert limits.usage_of_subtrees([cast.isp.path])[cast.isp.path]["mailboxes"] == 1
    assert limits.usage_of_subtrees([cast.government.path])[cast.government.path]["mailboxes"] == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_only_those_that_fit_succeed() -> None:
    from tests.fixtures import build_cast

    cast = build_cast()
    limit_actions.set_limits(actor=None, customer=cast.government, max_mailboxes=5)
    limit_actions.set_limits(actor=None, customer=cast.ministry, max_mailboxes=4)
    department = make_domain(cast.department, "department.example")
    ministry = make_domain(cast.ministry, "ministry.example")
    make_mailbox(ministry, "existing")
    workers = 8
    barrier = threading.Barrier(workers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            target = department if i % 2 else ministry
            actions.create_mailbox(
                actor=cast.sub_admin,
                domain=target,
                local_part=f"user{i}",
                password="Copper-Lantern-Vale-45",
            )
            result = "ok"
        except ValidationError as exc:
            result = "limit" if "limit" in exc.message_dict else f"other: {exc}"
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            result = f"error: {exc!r}"
        finally:
            connections.close_all()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(set(outcomes)) == ["limit", "ok"], outcomes
    # Ministry's limit of 4 is the tighter one: 1 existing + 3 new.
    assert outcomes.count("ok") == 3
    assert Mailbox.objects.filter(customer_path__startswith=cast.ministry.path).count() == 4
    connection.close()


def test_a_move_that_would_break_a_limit_above_the_new_parent_is_refused(cast: Cast) -> None:
    make_mailbox(make_domain(cast.department, "department.example"), "a")
    make_mailbox(make_domain(cast.department, "department2.example"), "b")
    limit_actions.set_limits(actor=None, customer=cast.isp, max_mailboxes=2)
    make_mailbox(make_domain(cast.shop, "shop.example"), "c")
    with pytest.raises(ValidationError) as info:
        tenant_actions.move_customer(
            actor=cast.root_admin, customer=cast.department, new_parent=cast.shop
        )
    message = info.value.message_dict["parent"][0]
    assert "2 mailboxes" in message and cast.isp.name in message, message
    cast.department.refresh_from_db()
    assert cast.department.path.startswith(cast.ministry.path)
    # A limit both places share does not change by moving within it.
    limit_actions.set_limits(actor=None, customer=cast.government, max_mailboxes=2)
    tenant_actions.move_customer(
        actor=cast.root_admin, customer=cast.department, new_parent=cast.government
    )
