"""Walk the hash chain and report the first record that was altered or removed."""

from __future__ import annotations

from dataclasses import dataclass

from . import chain
from .models import AuditChainHead, AuditRecord


@dataclass
class Finding:
    seq: int
    problem: str


def verify_chain(batch_size: int = 5000) -> Finding | None:
    """None when the chain is intact, else the first broken link."""
    expected_seq = 1
    prev_hash = chain.GENESIS
    last_seq = 0
    fields = ["seq", "prev_hash", "hash", *chain.HASHED_FIELDS]
    while True:
        batch = list(
            AuditRecord.objects.filter(seq__gte=expected_seq)
            .order_by("seq")
            .only(*set(fields))[:batch_size]
        )
        if not batch:
            break
        for record in batch:
            if record.seq != expected_seq:
                return Finding(expected_seq, f"record {expected_seq} is missing (deleted)")
            if record.prev_hash != prev_hash:
                return Finding(record.seq, "its link to the previous record does not match")
            if chain.compute_hash(prev_hash, record.hashed_values()) != record.hash:
                return Finding(record.seq, "its content was altered")
            prev_hash = record.hash
            last_seq = record.seq
            expected_seq += 1
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is not None and (head.last_seq != last_seq or head.last_hash != prev_hash):
        return Finding(last_seq + 1, f"records after {last_seq} are missing (deleted)")
    return None
