"""The daily usage snapshot: own figures match the objects, subtree sums match the sum of
their customers' own figures on any tree, a day is written once and rewritten in place."""

from __future__ import annotations

import datetime
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat import actions as chat_actions
from chat.models import ChatAccount
from cloudfiles import collect as cloud_collect
from cloudfiles.models import CloudAccount
from mail.models import Mailbox
from servers.models import Node
from tenants import actions as tenant_actions
from tenants.models import Customer
from tests.mail.helpers import make_alias, make_domain, make_mailbox
from usage import collect, snapshot
from usage.models import FIGURES, DailyUsage

pytestmark = pytest.mark.django_db

DAY = datetime.date(2026, 3, 1)
_names = itertools.count()

# A tree: node i > 0 hangs under one of the nodes before it; each node holds 0-2 mailboxes
# with a measured size and 0-1 aliases.
trees = st.integers(min_value=1, max_value=9).flatmap(
    lambda n: st.tuples(
        st.tuples(*[st.integers(min_value=0, max_value=max(i - 1, 0)) for i in range(n)]),
        st.lists(
            st.tuples(
                st.lists(st.integers(min_value=0, max_value=5_000_000), max_size=2),
                st.integers(min_value=0, max_value=1),
            ),
            min_size=n,
            max_size=n,
        ),
    )
)


def _build(parents: tuple[int, ...], holdings: list) -> list[Customer]:
    customers: list[Customer] = []
    for i, parent in enumerate(parents):
        customers.append(
            tenant_actions.create_customer(
                actor=None,
                name=f"Usage {next(_names)}",
                parent=customers[parent] if i else None,
            )
        )
    measured = {}
    cloud: dict[str, int] = {}
    for customer, (sizes, aliases) in zip(customers, holdings, strict=True):
        if not sizes and not aliases:
            continue
        domain = make_domain(customer, f"u{next(_names)}.example")
        for n, size in enumerate(sizes):
            box = make_mailbox(domain, f"box{n}", quota_mb=10)
            measured[box.pk] = (size, n + 1)
            cloud[box.email] = size // 3  # its cloud files (first box: an active account)
        for n in range(aliases):
            make_alias(domain, f"alias{n}", ["someone@outside.test"])
    collect.record(measured)
    if customers and cloud:
        # The cloud files collection of a node serving the whole tree, then the accounts
        # the converge left enabled (each customer's first mailbox).
        cloud_collect.record(Node(customer_path=customers[0].path), cloud)
        CloudAccount.objects.filter(mailbox__local_part="box0").update(active=True)
        # The team chat users a sync recorded (each customer's second mailbox), in an
        # organisation of the top customer.
        realm = chat_actions.create_realm(
            actor=None, customer=customers[0], name=f"Chat {next(_names)}",
            url="http://127.0.0.1:9", bot_email="bot@chat.example", bot_api_key="key-1",
        )  # fmt: skip
        ChatAccount.objects.bulk_create(
            ChatAccount(
                realm=realm, customer_path=box.customer_path, email=box.email, zulip_user_id=box.pk
            )
            for box in Mailbox.objects.filter(local_part="box1", customer__in=customers)
        )
    return customers


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=trees)
def test_subtree_sums_equal_the_sum_of_each_customers_own_figures(db, tree) -> None:
    customers = _build(*tree)
    snapshot.take(DAY)
    rows = {r.customer_id: r for r in DailyUsage.objects.filter(day=DAY)}
    for customer in customers:
        row = rows[customer.pk]
        boxes = Mailbox.objects.filter(customer=customer)
        assert row.own_mailboxes == boxes.count()
        assert row.own_used_bytes == sum(b.used_bytes or 0 for b in boxes)
        accounts = CloudAccount.objects.filter(mailbox__in=boxes)
        assert row.own_files_bytes == sum(a.used_bytes for a in accounts)
        assert row.own_files_users == sum(1 for b in boxes if b.local_part == "box0")
        below = [rows[c.pk] for c in customers if c.path.startswith(customer.path)]
        for name in FIGURES:
            assert getattr(row, f"tree_{name}") == sum(getattr(r, f"own_{name}") for r in below)
        assert row.own_chat_users == sum(1 for b in boxes if b.local_part == "box1")


def test_a_day_is_one_row_per_customer_rewritten_in_place(cast) -> None:
    domain = make_domain(cast.ministry, "daily.example")
    box = make_mailbox(domain, "ann", quota_mb=100)
    collect.record({box.pk: (1000, 2)})
    first = snapshot.take(DAY)
    assert first == Customer.objects.count()
    collect.record({box.pk: (5000, 3)})
    assert snapshot.take(DAY) == first
    rows = DailyUsage.objects.filter(day=DAY)
    assert rows.count() == first
    ministry = rows.get(customer=cast.ministry)
    assert (ministry.own_used_bytes, ministry.own_quota_mb, ministry.own_domains) == (5000, 100, 1)
    assert rows.get(customer=cast.provider).tree_used_bytes == 5000
    assert rows.get(customer=cast.isp).tree_used_bytes == 0
    # Another day is another row; the first stays as it was.
    collect.record({box.pk: (9000, 4)})
    snapshot.take(DAY + datetime.timedelta(days=1))
    assert DailyUsage.objects.get(customer=cast.ministry, day=DAY).own_used_bytes == 5000


def test_a_snapshot_that_fails_midway_leaves_the_day_as_it_was(cast, monkeypatch) -> None:
    domain = make_domain(cast.ministry, "midway.example")
    box = make_mailbox(domain, "ann")
    collect.record({box.pk: (1000, 1)})
    snapshot.take(DAY)

    def broken(customers, own):
        raise RuntimeError("worker died")

    collect.record({box.pk: (7000, 1)})
    monkeypatch.setattr(snapshot, "subtree_sums", broken)
    with pytest.raises(RuntimeError):
        snapshot.take(DAY)
    assert DailyUsage.objects.get(customer=cast.ministry, day=DAY).own_used_bytes == 1000
    monkeypatch.undo()
    snapshot.take(DAY)
    assert DailyUsage.objects.get(customer=cast.ministry, day=DAY).own_used_bytes == 7000


def test_history_outlives_a_deleted_customer(cast) -> None:
    gone = tenant_actions.create_customer(actor=None, name="Short-lived", parent=cast.isp)
    snapshot.take(DAY)
    tenant_actions.delete_customer(actor=None, customer=gone)
    assert DailyUsage.objects.filter(customer_id=gone.pk, day=DAY).exists()
    snapshot.take(DAY + datetime.timedelta(days=1))  # the next day simply has no row for it
    assert not DailyUsage.objects.filter(
        customer_id=gone.pk, day=DAY + datetime.timedelta(days=1)
    ).exists()
