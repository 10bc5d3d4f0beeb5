"""The hash chain: each record's hash covers its content and the previous record's hash.

Two formulas, chosen by the record's ``hash_version``:

* **v1** (records written before scope evidence): ``HASHED_FIELDS``. ``customer_path`` is
  not covered, so a v1 record moved to another subtree cannot be told from an intact one.
* **v2**: v1's fields plus ``hash_version`` and ``recorded_path``, the customer path the
  record was written with. The live ``customer_path`` (the column scoping filters on,
  rewritten when a subtree moves) must equal ``recorded_path`` with every later
  ``customer.move`` of the chain applied; :mod:`audit.verify` checks exactly that.
* **v3** (every new record, issue 19): the record is hashed alone when it is inserted
  (``content_hash`` over v2's fields, ``seq`` included) and linked into the chain after its
  transaction commits, by one chainer at a time (:mod:`audit.chainer`):
  ``hash = sha256(prev_hash, chain_pos, prev_seq, content_hash)``. ``chain_pos`` is the
  gapless position in the chain, ``prev_seq`` names the record before it (so a deleted
  record is reported by its number).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS = "0" * 64
CURRENT_VERSION = 3

# v1 evidence. ``customer_id``, ``object_type`` and ``object_id`` (which also decide who
# sees a record) were covered from the start.
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
HASHED_FIELDS_V2 = (*HASHED_FIELDS, "hash_version", "recorded_path")
# v3 hashes the same content as v2 (into ``content_hash``) and links it separately.
FIELDS_BY_VERSION = {1: HASHED_FIELDS, 2: HASHED_FIELDS_V2, 3: HASHED_FIELDS_V2}
# What the link of a v3 record covers besides the previous hash and the content hash.
LINK_FIELDS = ("chain_pos", "prev_seq")
# Every column any version hashes: what verification loads.
ALL_HASHED_FIELDS = HASHED_FIELDS_V2


def hashed_fields(version: int) -> tuple[str, ...]:
    """The fields the hash of a record of ``version`` covers; unknown versions are refused."""
    try:
        return FIELDS_BY_VERSION[version]
    except KeyError:
        raise ValueError(f"unknown audit hash version {version!r}") from None


def canonical(values: dict[str, Any], version: int = 1) -> bytes:
    data = {}
    for name in hashed_fields(version):
        value = values[name]
        if hasattr(value, "isoformat"):
            value = value.isoformat()
        data[name] = value
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(values: dict[str, Any]) -> str:
    """The hash of one v3 record alone, taken when it is inserted."""
    return hashlib.sha256(canonical(values, values.get("hash_version", 3))).hexdigest()


def link_hash(prev_hash: str, chain_pos: int, prev_seq: int, content: str) -> str:
    """The chain hash of a v3 record: its content hash linked after ``prev_hash``."""
    link = f"{chain_pos}:{prev_seq}:{content}".encode()
    return hashlib.sha256(prev_hash.encode() + b"\n" + link).hexdigest()


def compute_hash(prev_hash: str, values: dict[str, Any]) -> str:
    """The chain hash of a record of any version from its values (v3: ``LINK_FIELDS`` too)."""
    version = values.get("hash_version", 1)
    if version >= 3:
        return link_hash(prev_hash, values["chain_pos"], values["prev_seq"], content_hash(values))
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(values, version)).hexdigest()


def moved_path(path: str, moves: list[tuple[str, str]]) -> str:
    """``path`` after the subtree moves ``(old prefix, new prefix)``, applied in order."""
    for old, new in moves:
        if old and path.startswith(old):
            path = new + path[len(old) :]
    return path
