"""One-time recovery codes: shown once when generated, stored as hashes, used once each.

Each code carries about 60 random bits and guesses are throttled per account, so a plain
SHA-256 (bound to the owner, so equal codes of two accounts hash differently) is enough.
"""

from __future__ import annotations

import hashlib
import secrets

from django.utils import timezone

from ..models import Administrator
from ..models_identity import RecoveryCode

COUNT = 10
# No 0/o, 1/l/i: codes are copied from paper.
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
GROUPS, GROUP_LENGTH = 3, 4


def normalise(code: str) -> str:
    return "".join(ch for ch in (code or "").lower() if ch.isalnum())


def hash_code(owner_id: int, code: str) -> str:
    return hashlib.sha256(f"{owner_id}:{normalise(code)}".encode()).hexdigest()


def _new_code() -> str:
    groups = ("".join(secrets.choice(ALPHABET) for _ in range(GROUP_LENGTH)) for _ in range(GROUPS))
    return "-".join(groups)


def replace_codes(owner: Administrator) -> list[str]:
    """Delete the owner's codes and return a fresh set (the only time they are readable)."""
    codes = [_new_code() for _ in range(COUNT)]
    RecoveryCode.objects.filter(owner=owner).delete()
    RecoveryCode.objects.bulk_create(
        [RecoveryCode(owner=owner, code_hash=hash_code(owner.pk, c)) for c in codes]
    )
    return codes


def remaining(owner: Administrator) -> int:
    return RecoveryCode.objects.filter(owner=owner, used_at__isnull=True).count()


def consume(owner: Administrator, code: str) -> bool:
    """Use a code: one conditional UPDATE, so a code works exactly once even under races."""
    if len(normalise(code)) != GROUPS * GROUP_LENGTH:
        return False
    updated = RecoveryCode.objects.filter(
        owner=owner, code_hash=hash_code(owner.pk, code), used_at__isnull=True
    ).update(used_at=timezone.now())
    return bool(updated)
