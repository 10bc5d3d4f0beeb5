"""Records are chained after their commit by one chainer at a time (issue 19).

Real PostgreSQL, real threads and processes: concurrent appends end up in one gapless,
verifiable chain without anyone waiting on a shared row; a record altered before it was
chained is reported; a process killed between its commit and its chaining, or killed while
chaining, leaves records that the next pass chains; a rolled-back append leaves a gap in
``seq`` and nothing in the chain.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction

from audit import chainer
from audit.models import AuditChainHead, AuditRecord
from audit.verify import verify
from tests.audit.test_chain import tamper
from ums import auditing, reconcile

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
THREADS = 8
PER_THREAD = 25


def note(name: str) -> None:
    """One audited event in a transaction of its own (as an action outside a request)."""
    with transaction.atomic():
        auditing.record("test.noted", object_type="test", object_id=name, object_repr=name)


def test_concurrent_appends_form_one_gapless_verified_chain() -> None:
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            for n in range(PER_THREAD):
                note(f"t{i}-{n}")
        except BaseException as exc:  # named by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    total = THREADS * PER_THREAD
    # No pass run here: the hand-off after each commit left nothing behind.
    assert chainer.pending() == 0
    report = verify()
    assert report.finding is None, report.finding
    assert report.records == total
    assert report.unchained == 0
    positions = sorted(AuditRecord.objects.values_list("chain_pos", flat=True))
    assert positions == list(range(1, total + 1))
    head = AuditChainHead.objects.get(pk=1)
    assert head.last_pos == total


class _ChainerHeld:
    """Another session holds the chainer's lock: appends commit unchained meanwhile."""

    def __enter__(self) -> _ChainerHeld:
        self.conn = connections.create_connection("default")
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", chainer.CHAIN_LOCK)
        return self

    def __exit__(self, *exc: object) -> None:
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", chainer.CHAIN_LOCK)
        self.conn.close()


def test_a_record_altered_before_it_was_chained_is_reported() -> None:
    note("before")
    with _ChainerHeld():
        note("victim")
        victim = AuditRecord.objects.get(object_id="victim")
        assert victim.chain_pos is None
        report = verify()
        assert report.finding is None and report.unchained == 1
        tamper("UPDATE audit_auditrecord SET object_repr = 'x' WHERE id = %s", [victim.pk])
        finding = verify().finding
        assert finding is not None and finding.seq == victim.seq
        assert "altered (not chained yet)" in finding.problem
    # Chained as it is now: the link covers the hash taken at insert, so still reported.
    assert chainer.chain_committed() == 1
    finding = verify().finding
    assert finding is not None and finding.seq == victim.seq
    assert finding.problem == "its content was altered"


def test_chain_columns_are_set_once_and_only_together() -> None:
    note("one")
    record = AuditRecord.objects.get(object_id="one")
    assert record.chain_pos == 1
    for statement in (
        "UPDATE audit_auditrecord SET chain_pos = 7 WHERE id = %s",
        "UPDATE audit_auditrecord SET hash = repeat('0', 64) WHERE id = %s",
        "UPDATE audit_auditrecord SET content_hash = repeat('0', 64) WHERE id = %s",
    ):
        with (
            pytest.raises(Exception, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [record.pk])
    with _ChainerHeld():
        note("two")
    two = AuditRecord.objects.get(object_id="two")
    assert two.chain_pos is None
    with (
        pytest.raises(Exception, match="set once, together"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE audit_auditrecord SET chain_pos = 2 WHERE id = %s", [two.pk])
    call_command("audit_chain", stdout=(out := io.StringIO()))
    assert out.getvalue().strip() == "Linked 1 records; 0 not chained yet."
    assert verify().finding is None


def test_a_rolled_back_append_leaves_a_gap_in_seq_and_none_in_the_chain() -> None:
    note("first")
    with pytest.raises(RuntimeError), transaction.atomic():
        auditing.record("test.noted", object_type="test", object_id="lost", object_repr="lost")
        raise RuntimeError("roll back")
    note("last")
    first, last = (AuditRecord.objects.get(object_id=n) for n in ("first", "last"))
    assert last.seq == first.seq + 2  # the rolled-back record's number is a gap
    assert (first.chain_pos, last.chain_pos) == (1, 2)
    assert last.prev_seq == first.seq
    report = verify()
    assert report.finding is None and report.records == 2


def test_a_gap_left_by_a_transaction_still_open_is_chained_after_it() -> None:
    """A lower ``seq`` committing after a higher one was chained is chained after it."""
    other = connections.create_connection("default")
    other.set_autocommit(False)
    with other.cursor() as cursor:
        cursor.execute("SELECT nextval('audit_record_seq')")
        early = cursor.fetchone()[0]
    note("later")  # a higher seq, chained now
    later = AuditRecord.objects.get(object_id="later")
    assert later.seq > early and later.chain_pos == 1
    other.rollback()
    other.close()
    assert verify().finding is None


CHILD = """
import os, sys, time
import django
django.setup()
from django.db import transaction
from audit import chainer
from ums import auditing, reconcile
mode = sys.argv[1]
if mode == "append":
    # Commit a record while the test holds the chainer, then die before any later pass.
    with transaction.atomic():
        auditing.record("test.noted", object_type="test", object_id="orphan", object_repr="o")
elif mode == "chain":
    # Be the chainer: link the pending records, then die before the commit.
    transaction.set_autocommit(False)
    assert chainer.chain_pass() > 0
print("ready", flush=True)
time.sleep(600)
"""


def _child(mode: str) -> subprocess.Popen:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_SETTINGS_MODULE": "ums.settings",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.strip() == "ready", f"child {mode} did not get ready (exit {proc.poll()})"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_process_killed_between_commit_and_chaining_heals_on_the_next_pass() -> None:
    note("before")
    with _ChainerHeld():
        proc = _child("append")
        _kill(proc)
    orphan = AuditRecord.objects.get(object_id="orphan")
    assert orphan.chain_pos is None
    report = verify()
    assert report.finding is None and report.unchained == 1
    # The reconciler loop (beat, the embedded runner) is the safety net.
    assert reconcile.run_all()["audit.chain"]["linked"] == 1
    report = verify()
    assert report.finding is None and report.unchained == 0 and report.records == 2


def test_a_chainer_killed_mid_pass_loses_nothing_and_the_next_pass_chains() -> None:
    note("chained")
    with _ChainerHeld():  # their hand-offs find the chainer busy: left pending
        for n in range(3):
            note(f"pending-{n}")
    pending_before = chainer.pending()
    proc = _child("chain")  # holds the chainer with links written, uncommitted
    note("while-held")  # cannot chain now: left for the holder, which dies
    _kill(proc)
    assert chainer.pending() == pending_before + 1  # the dead chainer's links rolled back
    call_command("audit_verify")  # chains first, then verifies
    report = verify()
    assert report.finding is None and report.unchained == 0
    assert report.records == AuditRecord.objects.count()


def test_an_append_inside_an_outer_block_is_chained_before_that_block_commits() -> None:
    """The outermost block's append is chained by the pass after its commit (above); one
    nested in an outer block (a command's) is chained in the transaction, since that
    commit may be far off; both end in one verified chain."""
    note("alone")
    with transaction.atomic():
        note("nested")
        nested = AuditRecord.objects.get(object_id="nested")
        assert nested.chain_pos == 2  # linked inside the still open outer transaction
    assert AuditRecord.objects.get(object_id="alone").chain_pos == 1
    report = verify()
    assert report.finding is None and report.records == 2
