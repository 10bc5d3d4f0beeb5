"""Escrow of resource limits (issue 19), on real PostgreSQL with threads.

Many customers under one limited parent (and a limited grandparent) create at once, each
in its own customer so that nothing but the limits is shared: exactly as many creates
succeed as the tighter limit allows, none deadlocks, usage stays exact and the escrow
invariant (usage + granted-but-unused <= limit) holds. A create whose customer holds
escrow does not touch the limit row at all, and setting a limit takes escrow back."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, connections, transaction

from mail import actions, limits
from mail.models import Mailbox
from tenants import actions as tenant_actions
from tenants import limit_actions
from tenants.escrow import LimitEscrow
from tests.mail.helpers import make_domain

pytestmark = pytest.mark.django_db(transaction=True)

CUSTOMERS = 8
THREADS = 16
ATTEMPTS = 5  # per thread: 80 attempts
PARENT_CAP = 23
GRANDPARENT_CAP = 40


def _dsn() -> str:
    db = settings.DATABASES["default"]
    return f"host={db['HOST']} port={db['PORT']} dbname={db['NAME']} user={db['USER']}"


def _escrow_holds(parent_id: int, column: str) -> int:
    return sum(getattr(row, column) for row in LimitEscrow.objects.filter(limit_owner_id=parent_id))


def test_creates_from_many_customers_never_exceed_the_limit() -> None:
    from tests.fixtures import build_cast

    cast = build_cast()
    parent = cast.ministry  # Government > Ministry > 8 children
    children = [
        tenant_actions.create_customer(actor=None, name=f"Agency {i}", parent=parent)
        for i in range(CUSTOMERS)
    ]
    domains = [make_domain(child, f"agency{i}.example") for i, child in enumerate(children)]
    limit_actions.set_limits(actor=None, customer=cast.government, max_mailboxes=GRANDPARENT_CAP)
    limit_actions.set_limits(actor=None, customer=parent, max_mailboxes=PARENT_CAP)
    # Used before: two mailboxes in the parent's subtree, one outside it in the grandparent's.
    actions.create_mailbox(
        actor=None, domain=domains[0], local_part="before", password="Copper-Lantern-Vale-45"
    )
    actions.create_mailbox(
        actor=None,
        domain=make_domain(cast.government, "gov.example"),
        local_part="before",
        password="Copper-Lantern-Vale-45",
    )
    barrier = threading.Barrier(THREADS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        domain = domains[i % CUSTOMERS]
        try:
            barrier.wait(timeout=60)
            for n in range(ATTEMPTS):
                try:
                    actions.create_mailbox(
                        actor=cast.sub_admin,
                        domain=domain,
                        local_part=f"w{i}n{n}",
                        password="Copper-Lantern-Vale-45",
                    )
                    result = "ok"
                except ValidationError as exc:
                    result = "limit" if "limit" in exc.message_dict else f"other: {exc}"
                except Exception as exc:  # a deadlock or anything else: named below
                    result = f"error: {exc!r}"
                with lock:
                    outcomes.append(result)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)

    assert set(outcomes) == {"ok", "limit"}, outcomes
    # The parent's limit (23, one used before) is the tighter one: 22 more fit.
    assert outcomes.count("ok") == PARENT_CAP - 1
    in_parent = Mailbox.objects.filter(customer_path__startswith=parent.path).count()
    assert in_parent == PARENT_CAP
    # Usage shown to admins is exact: what a recount from the rows finds.
    shown = limits.usage_of_subtrees([parent.path, cast.government.path])
    limits.recount()
    assert limits.usage_of_subtrees([parent.path, cast.government.path]) == shown
    assert shown[parent.path]["mailboxes"] == PARENT_CAP
    assert shown[cast.government.path]["mailboxes"] == PARENT_CAP + 1
    # The escrow invariant, per limited customer.
    assert shown[parent.path]["mailboxes"] + _escrow_holds(parent.pk, "mailboxes") <= PARENT_CAP
    government_total = shown[cast.government.path]["mailboxes"]
    assert government_total + _escrow_holds(cast.government.pk, "mailboxes") <= GRANDPARENT_CAP
    connection.close()


def test_a_create_with_escrow_does_not_touch_the_limit_row_and_setting_a_limit_reclaims() -> None:
    from tests.fixtures import build_cast

    cast = build_cast()
    domain = make_domain(cast.ministry, "ministry.example")
    limit_actions.set_limits(actor=None, customer=cast.government, max_mailboxes=1000)
    actions.create_mailbox(
        actor=None, domain=domain, local_part="first", password="Copper-Lantern-Vale-45"
    )
    # The first create refilled: the ministry now holds a batch of the government's limit.
    held = _escrow_holds(cast.government.pk, "mailboxes")
    assert held == limits.REFILL_CREATES
    # Another session holds the government's limit row: a create with escrow still passes.
    with psycopg.connect(_dsn(), autocommit=False) as other:
        other.execute(
            "SELECT 1 FROM tenants_resourcelimit WHERE customer_id = %s FOR UPDATE",
            [cast.government.pk],
        )
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        actions.create_mailbox(
            actor=None, domain=domain, local_part="second", password="Copper-Lantern-Vale-45"
        )
        other.rollback()
    assert _escrow_holds(cast.government.pk, "mailboxes") == held - 1
    # Lowering the limit to exactly the usage takes the escrow back and is allowed.
    limit_actions.set_limits(actor=None, customer=cast.government, max_mailboxes=2)
    assert _escrow_holds(cast.government.pk, "mailboxes") == 0
    with pytest.raises(ValidationError, match="limit"):
        actions.create_mailbox(
            actor=None, domain=domain, local_part="third", password="Copper-Lantern-Vale-45"
        )
    connection.close()


def _run_in_thread(work: Callable[[], object], outcome: list[object]) -> threading.Thread:
    """Start ``work`` in a thread (a connection of its own); what it returns or raises is
    appended to ``outcome`` for the test's assertion."""

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as exc:  # named in the caller's assertion
            outcome.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _limit_row_free(customer_id: int) -> bool:
    """Whether another session can lock this limit row right now (NOWAIT)."""
    with psycopg.connect(_dsn(), autocommit=False) as other:
        try:
            other.execute(
                "SELECT 1 FROM tenants_resourcelimit WHERE customer_id = %s FOR UPDATE NOWAIT",
                [customer_id],
            )
        except psycopg.errors.LockNotAvailable:
            return False
        finally:
            other.rollback()
    return True


def _committed_escrow(owner_id: int, holder_id: int) -> int:
    with psycopg.connect(_dsn()) as other:
        row = other.execute(
            "SELECT mailboxes FROM tenants_limitescrow WHERE limit_owner_id = %s "
            "AND holder_id = %s",
            [owner_id, holder_id],
        ).fetchone()
    return row[0] if row else 0


class _RolledBack(Exception):
    pass


def test_a_refill_commits_apart_and_stays_granted_when_the_create_rolls_back() -> None:
    from tests.fixtures import build_cast

    cast = build_cast()
    domain = make_domain(cast.ministry, "ministry.example")
    limit_actions.set_limits(actor=None, customer=cast.government, max_mailboxes=1000)
    with pytest.raises(_RolledBack), transaction.atomic():
        actions.create_mailbox(
            actor=None, domain=domain, local_part="first", password="Copper-Lantern-Vale-45"
        )
        # The create's transaction is still open: the refill has committed and released
        # the government's limit row already, so another session locks it at once.
        assert _limit_row_free(cast.government.pk)
        assert _committed_escrow(cast.government.pk, cast.ministry.pk) == (
            limits.REFILL_CREATES + 1
        )
        raise _RolledBack
    # The create rolled back: nothing used, and its unit stays granted to the ministry.
    assert not Mailbox.objects.filter(customer=cast.ministry).exists()
    used = limits.usage_of_subtrees([cast.government.path])[cast.government.path]["mailboxes"]
    assert used == 0
    held = _escrow_holds(cast.government.pk, "mailboxes")
    assert held == limits.REFILL_CREATES + 1
    assert used + held <= 1000
    # The next create takes from that escrow without a refill.
    actions.create_mailbox(
        actor=None, domain=domain, local_part="again", password="Copper-Lantern-Vale-45"
    )
    assert _escrow_holds(cast.government.pk, "mailboxes") == held - 1
    connection.close()


def test_creates_in_one_transaction_refill_there_once_they_hold_escrow_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second create in the same transaction must not refill apart: the refill would
    wait for the escrow row this transaction holds. Near the limit exactly what fits
    passes, and a rolled-back refusal leaves the invariant true."""
    from tests.fixtures import build_cast
    from ums import autonomous

    cast = build_cast()
    domain = make_domain(cast.ministry, "ministry.example")
    limit_actions.set_limits(actor=None, customer=cast.government, max_mailboxes=2)
    apart: list[int] = []
    real = autonomous.cursor

    def counted() -> object:
        apart.append(1)
        return real()

    monkeypatch.setattr(autonomous, "cursor", counted)
    # A lock wait of the refill apart would fail at once instead of after a second.
    monkeypatch.setattr(autonomous, "LOCK_TIMEOUT_MS", 1)
    with transaction.atomic():
        for name in ("one", "two"):
            actions.create_mailbox(
                actor=None, domain=domain, local_part=name, password="Copper-Lantern-Vale-45"
            )
        with pytest.raises(ValidationError, match="limit"):
            actions.create_mailbox(
                actor=None, domain=domain, local_part="three", password="Copper-Lantern-Vale-45"
            )
    assert apart == [1]  # only the first create refilled apart
    assert Mailbox.objects.filter(customer=cast.ministry).count() == 2
    used = limits.usage_of_subtrees([cast.government.path])[cast.government.path]["mailboxes"]
    assert used + _escrow_holds(cast.government.pk, "mailboxes") <= 2
    connection.close()


def test_a_refill_that_cannot_run_apart_runs_in_the_create(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another session holds the limit row longer than a refill apart may wait: the create
    refills in its own transaction (waiting there, in PostgreSQL's view) and succeeds."""
    from tests.fixtures import build_cast
    from ums import autonomous

    cast = build_cast()
    domain = make_domain(cast.ministry, "ministry.example")
    limit_actions.set_limits(actor=None, customer=cast.government, max_mailboxes=1000)
    monkeypatch.setattr(autonomous, "LOCK_TIMEOUT_MS", 50)
    outcome: list[object] = []

    def create() -> str:
        actions.create_mailbox(
            actor=None, domain=domain, local_part="late", password="Copper-Lantern-Vale-45"
        )
        return "ok"

    with psycopg.connect(_dsn(), autocommit=False) as other:
        other.execute(
            "SELECT 1 FROM tenants_resourcelimit WHERE customer_id = %s FOR UPDATE",
            [cast.government.pk],
        )
        writer = _run_in_thread(create, outcome)
        # The refill apart gives up after 50 ms; the create then waits in its own
        # transaction for this row, which PostgreSQL shows as a lock wait of its session.
        for _poll in range(200):
            waiting = other.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE NOT l.granted AND c.relname = 'tenants_resourcelimit'"
            ).fetchone()[0]
            if waiting and writer.is_alive():
                break
            writer.join(timeout=0.05)
        other.rollback()
    writer.join(timeout=60)
    assert outcome == ["ok"]
    # The refill in the create's transaction granted a batch ahead, the create used 1.
    assert _escrow_holds(cast.government.pk, "mailboxes") == limits.REFILL_CREATES
    assert Mailbox.objects.filter(customer=cast.ministry).count() == 1
    connection.close()


def test_a_take_that_waited_and_found_the_escrow_dry_keeps_no_lock_on_it() -> None:
    """Two creates of one customer: the second's conditional UPDATE waits for the first,
    which takes the last unit and commits; the re-check fails. PostgreSQL keeps the row
    locked by such an UPDATE; the take's savepoint (sent in the UPDATE's round trip) is
    rolled back, so the row is free again while the second create's transaction goes on
    (a refill taking escrow back must not wait for it)."""
    from tests.fixtures import build_cast

    cast = build_cast()
    limit_actions.set_limits(actor=None, customer=cast.government, max_mailboxes=1000)
    owner, holder = cast.government.pk, cast.ministry.pk
    LimitEscrow.objects.create(limit_owner_id=owner, holder_id=holder, mailboxes=1)
    row = "SELECT 1 FROM tenants_limitescrow WHERE limit_owner_id = %s AND holder_id = %s"
    taken: list[bool] = []
    outcome: list[object] = []
    checked = threading.Event()

    def second_create() -> None:
        with transaction.atomic():
            taken.append(limits._take(owner, holder, {"mailboxes": 1}))
            with connection.cursor() as cursor:  # the transaction goes on after the take
                cursor.execute("SELECT 1")
            checked.wait(timeout=30)

    with psycopg.connect(_dsn(), autocommit=False) as first:
        first.execute(
            "UPDATE tenants_limitescrow SET mailboxes = mailboxes - 1 "
            "WHERE limit_owner_id = %s AND holder_id = %s",
            [owner, holder],
        )
        writer = _run_in_thread(second_create, outcome)
        for _poll in range(400):  # until the second take waits for the first's row lock
            waiting = first.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()"
            ).fetchone()[0]
            if waiting:
                break
            writer.join(timeout=0.025)
        assert waiting, "the second take never waited"
        first.commit()
    for _poll in range(400):
        if taken or outcome:
            break
        writer.join(timeout=0.025)
    try:
        assert (taken, outcome) == ([False], [])
        # The second create's transaction is still open, yet the row is free.
        with psycopg.connect(_dsn(), autocommit=False) as other:
            other.execute(row + " FOR UPDATE NOWAIT", [owner, holder])
            other.rollback()
    finally:
        checked.set()
        writer.join(timeout=30)
    assert outcome == [None]
    connection.close()
