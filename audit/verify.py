"""Walk the hash chain and report the first record that was altered, moved or removed.

Scope is part of the evidence for records of hash version 2: a record's live
``customer_path`` must be the path it was written with (``recorded_path``, hashed) with
every later ``customer.move`` of the chain applied, in order. A record of version 1 predates
that evidence; its ``customer_path`` is not covered and a change to it cannot be detected
(``Report.unscoped`` counts them).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from . import chain
from .models import AuditChainHead, AuditRecord

MOVE_ACTION = "customer.move"


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


def _moves() -> list[tuple[int, str, str]]:
    """Every subtree move in the chain as (seq, old path, new path), by seq.

    Read before the walk; each move record is itself verified by the walk, so a forged or
    edited move is reported there.
    """
    moves = []
    rows = AuditRecord.objects.filter(action=MOVE_ACTION).order_by("seq")
    for seq, changes in rows.values_list("seq", "changes"):
        before = (changes or {}).get("before") or {}
        after = (changes or {}).get("after") or {}
        if isinstance(before.get("path"), str) and isinstance(after.get("path"), str):
            moves.append((seq, before["path"], after["path"]))
    return moves


def expected_path(
    record: AuditRecord, moves: list[tuple[int, str, str]], move_seqs: list[int]
) -> str:
    """Where ``record`` must be now: its recorded path after every later move."""
    start = bisect.bisect_right(move_seqs, record.seq)
    return chain.moved_path(record.recorded_path, [(o, n) for _s, o, n in moves[start:]])


def verify(batch_size: int = 5000) -> Report:
    report = Report(moves=_moves())
    move_seqs = [seq for seq, _old, _new in report.moves]
    expected_seq = 1
    prev_hash = chain.GENESIS
    last_seq = 0
    fields = {"seq", "prev_hash", "hash", "customer_path", *chain.ALL_HASHED_FIELDS}
    while True:
        batch = list(
            AuditRecord.objects.filter(seq__gte=expected_seq)
            .order_by("seq")
            .only(*fields)[:batch_size]
        )
        if not batch:
            break
        for record in batch:
            finding = _check(record, expected_seq, prev_hash, report, move_seqs)
            if finding is not None:
                report.finding = finding
                return report
            report.records += 1
            prev_hash = record.hash
            last_seq = record.seq
            expected_seq += 1
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is not None and (head.last_seq != last_seq or head.last_hash != prev_hash):
        report.finding = Finding(last_seq + 1, f"records after {last_seq} are missing (deleted)")
    return report


def _check(
    record: AuditRecord,
    expected_seq: int,
    prev_hash: str,
    report: Report,
    move_seqs: list[int],
) -> Finding | None:
    if record.seq != expected_seq:
        return Finding(expected_seq, f"record {expected_seq} is missing (deleted)")
    if record.prev_hash != prev_hash:
        return Finding(record.seq, "its link to the previous record does not match")
    if record.hash_version not in chain.FIELDS_BY_VERSION:
        return Finding(record.seq, f"its hash version {record.hash_version} is unknown")
    if chain.compute_hash(prev_hash, record.hashed_values()) != record.hash:
        return Finding(record.seq, "its content was altered")
    if record.hash_version < 2:
        report.unscoped += 1
        return None
    expected = expected_path(record, report.moves, move_seqs)
    if record.customer_path != expected:
        return Finding(
            record.seq,
            f"its scope was changed: customer_path is {record.customer_path!r}, "
            f"the chain says {expected!r}",
        )
    return None


def verify_chain(batch_size: int = 5000) -> Finding | None:
    """None when the chain is intact, else the first broken link."""
    return verify(batch_size).finding
