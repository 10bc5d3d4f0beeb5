"""Concurrent creates under one limited parent, on real PostgreSQL with threads: the limit
is never exceeded, nothing deadlocks, usage counters stay exact and the audit chain stays
gapless and verifiable although the shared rows (the parent's limit row, the audit chain
head) are now locked only at the end of each create (issue 19)."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections

from audit.models import AuditRecord
from audit.verify import verify
from mail import actions, limits
from mail.models import Alias, Mailbox
from tenants import limit_actions
from tests.mail.helpers import make_domain

pytestmark = pytest.mark.django_db(transaction=True)

MAX_MAILBOXES = 6
MAX_ALIASES = 3
THREADS = 12


def test_many_writers_under_one_limit_never_exceed_it() -> None:
    from tests.fixtures import build_cast

    cast = build_cast()
    limit_actions.set_limits(
        actor=None,
        customer=cast.government,
        max_mailboxes=MAX_MAILBOXES,
        max_aliases=MAX_ALIASES,
    )
    domains = [
        make_domain(customer, f"d{i}.example")
        for i, customer in enumerate([cast.government, cast.ministry, cast.department])
    ]
    barrier = threading.Barrier(THREADS)
    outcomes: list[tuple[str, str]] = []
    lock = threading.Lock()

    def attempt(kind: str, create: object) -> None:
        try:
            create()  # type: ignore[operator]
            result = "ok"
        except ValidationError as exc:
            result = "limit" if "limit" in exc.message_dict else f"other: {exc}"
        except Exception as exc:  # a deadlock or anything else: named by the assertion
            result = f"error: {exc!r}"
        with lock:
            outcomes.append((kind, result))

    def writer(i: int) -> None:
        domain = domains[i % len(domains)]
        try:
            barrier.wait(timeout=60)
            for n in range(2):
                attempt(
                    "mailbox",
                    lambda n=n: actions.create_mailbox(
                        actor=cast.sub_admin,
                        domain=domain,
                        local_part=f"w{i}n{n}",
                        password="Copper-Lantern-Vale-45",
                    ),
                )
            attempt(
                "alias",
                lambda: actions.create_alias(
                    actor=cast.sub_admin,
                    domain=domain,
                    local_part=f"a{i}",
                    targets=["someone@elsewhere.example"],
                ),
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)

    results = {result for _kind, result in outcomes}
    assert results == {"ok", "limit"}, outcomes
    assert outcomes.count(("mailbox", "ok")) == MAX_MAILBOXES
    assert outcomes.count(("alias", "ok")) == MAX_ALIASES
    under = cast.government.path
    assert Mailbox.objects.filter(customer_path__startswith=under).count() == MAX_MAILBOXES
    assert (
        Alias.objects.filter(customer_path__startswith=under, is_system=False).count()
        == MAX_ALIASES
    )
    # The usage counters the checks sum are what a recount from the rows finds.
    counted = limits.usage_of_subtrees([under])
    limits.recount()
    assert limits.usage_of_subtrees([under]) == counted
    assert counted[under]["mailboxes"] == MAX_MAILBOXES
    # One audit record per create that happened, none for a refused one, chain intact.
    assert AuditRecord.objects.filter(action="mail.mailbox.create").count() == MAX_MAILBOXES
    created = [str(pk) for pk in Alias.objects.filter(is_system=False).values_list("pk", flat=True)]
    system = Alias.objects.filter(is_system=True).count()  # postmaster@ and abuse@, audited too
    assert AuditRecord.objects.filter(action="mail.alias.create").count() == MAX_ALIASES + system
    assert (
        AuditRecord.objects.filter(action="mail.alias.create", object_id__in=created).count()
        == MAX_ALIASES
    )
    report = verify()
    assert report.finding is None, report.finding
    connection.close()
