"""Walk the hash chain and report the first record that was altered, moved or removed.

Scope is part of the evidence for records of hash version 2 and later: a record's live
``customer_path`` must be the path it was written with (``recorded_path``, hashed) with
every later ``customer.move`` of the chain applied, in order. A record of version 1 predates
that evidence; its ``customer_path`` is not covered and a change to it cannot be detected
(``Report.unscoped`` counts them).

The chain is walked by ``chain_pos`` (issue 19: records are linked after their commit, see
:mod:`audit.chainer`). Records not linked yet (the unchained tail, normally the last
milliseconds' records) are counted in ``Report.unchained`` and their own ``content_hash``
is checked, so a record altered before it was chained is reported too. A record *deleted*
before it was chained leaves only a gap in ``seq``, which a rolled-back transaction leaves
as well: that short window is the price of not serialising every action on one row.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from django.utils import timezone

from . import chain
from .models import AuditChainHead, AuditRecord

MOVE_ACTION = "customer.move"
# Columns a walk loads.
FIELDS = {
    "seq", "chain_pos", "prev_seq", "prev_hash", "hash", "content_hash", "customer_path",
    *chain.ALL_HASHED_FIELDS,
}  # fmt: skip


@dataclass
class Finding:
    seq: int
    problem: str


@dataclass
class Report:
    """The outcome of a walk: the first problem (None when intact) and what was covered."""

    finding: Finding | None = None
    records: int = 0
    unscoped: int = 0  # version 1 records: scope not covered by their hash
    moves: list[tuple[int, str, str]] = field(default_factory=list)
    unchained: int = 0  # records not linked into the chain yet (the tail)
    oldest_unchained_seconds: float = 0.0


@dataclass
class _Walk:
    """Where the walk is: the last verified record's chain position, number and hash."""

    pos: int = 0
    seq: int = 0
    hash: str = chain.GENESIS


def _moves() -> list[tuple[int, str, str]]:
    """Every chained subtree move as (chain position, old path, new path), in chain order.

    Read before the walk; each move record is itself verified by the walk, so a forged or
    edited move is reported there.
    """
    moves = []
    rows = AuditRecord.objects.filter(action=MOVE_ACTION, chain_pos__isnull=False)
    for pos, changes in rows.order_by("chain_pos").values_list("chain_pos", "changes"):
        before = (changes or {}).get("before") or {}
        after = (changes or {}).get("after") or {}
        if isinstance(before.get("path"), str) and isinstance(after.get("path"), str):
            moves.append((pos, before["path"], after["path"]))
    return moves


def expected_path(
    record: AuditRecord, moves: list[tuple[int, str, str]], move_positions: list[int]
) -> str:
    """Where ``record`` must be now: its recorded path after every later move in the chain."""
    start = bisect.bisect_right(move_positions, record.chain_pos)
    return chain.moved_path(record.recorded_path, [(o, n) for _p, o, n in moves[start:]])


def verify(batch_size: int = 5000) -> Report:
    report = Report(moves=_moves())
    move_positions = [pos for pos, _old, _new in report.moves]
    walk = _Walk()
    while True:
        batch = list(
            AuditRecord.objects.filter(chain_pos__gt=walk.pos)
            .order_by("chain_pos")
            .only(*FIELDS)[:batch_size]
        )
        if not batch:
            break
        for record in batch:
            finding = _check(record, walk, report, move_positions)
            if finding is not None:
                report.finding = finding
                return report
            report.records += 1
            walk.pos, walk.seq, walk.hash = record.chain_pos, record.seq, record.hash
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is not None and (head.last_pos != walk.pos or head.last_hash != walk.hash):
        report.finding = Finding(
            head.last_seq, f"record {head.last_seq} is missing (deleted): the chain ends early"
        )
        return report
    report.finding = _check_tail(report)
    return report


def _check(
    record: AuditRecord, walk: _Walk, report: Report, move_positions: list[int]
) -> Finding | None:
    if record.chain_pos != walk.pos + 1:
        missing = record.prev_seq if record.prev_seq is not None else walk.seq + 1
        return Finding(missing, f"record {missing} is missing (deleted)")
    if record.prev_hash != walk.hash or record.prev_seq != walk.seq:
        return Finding(record.seq, "its link to the previous record does not match")
    if record.hash_version not in chain.FIELDS_BY_VERSION:
        return Finding(record.seq, f"its hash version {record.hash_version} is unknown")
    values = record.hashed_values()
    if record.hash_version >= 3 and record.content_hash != chain.content_hash(values):
        return Finding(record.seq, "its content was altered")
    if chain.compute_hash(walk.hash, values) != record.hash:
        return Finding(record.seq, "its content was altered")
    if record.hash_version < 2:
        report.unscoped += 1
        return None
    expected = expected_path(record, report.moves, move_positions)
    if record.customer_path != expected:
        return Finding(
            record.seq,
            f"its scope was changed: customer_path is {record.customer_path!r}, "
            f"the chain says {expected!r}",
        )
    return None


def _check_tail(report: Report) -> Finding | None:
    """The records not chained yet: each must still match the hash taken at its insert."""
    tail = AuditRecord.objects.filter(chain_pos__isnull=True).order_by("seq").only(*FIELDS)
    for record in tail.iterator(chunk_size=1000):
        report.unchained += 1
        if report.unchained == 1:
            age = (timezone.now() - record.timestamp).total_seconds()
            report.oldest_unchained_seconds = max(age, 0.0)
        if record.hash_version < 3 or record.content_hash != chain.content_hash(
            record.hashed_values()
        ):
            return Finding(record.seq, "its content was altered (not chained yet)")
    return None


def verify_chain(batch_size: int = 5000) -> Finding | None:
    """None when the chain is intact, else the first broken link."""
    return verify(batch_size).finding
