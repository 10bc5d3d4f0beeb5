"""The hash chain: each record's hash covers its content and the previous record's hash."""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS = "0" * 64

# Fields that make up the evidence. ``customer_path`` is left out on purpose: it is a
# denormalised index rewritten when a subtree moves; ``customer_id`` is the evidence.
HASHED_FIELDS = (
    "seq",
    "timestamp",
    "actor_id",
    "actor_name",
    "source_ip",
    "channel",
    "request_id",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "customer_id",
    "changes",
)


def canonical(values: dict[str, Any]) -> bytes:
    data = {}
    for name in HASHED_FIELDS:
        value = values[name]
        if hasattr(value, "isoformat"):
            value = value.isoformat()
        data[name] = value
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(prev_hash: str, values: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(values)).hexdigest()
