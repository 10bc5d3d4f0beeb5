"""The licence file: parse it and verify its Ed25519 signature against the product's keys.

The file (written by ``scripts/sign_licence.py``) is an armored block::

    (any readable text: a summary for people, never trusted)
    -----BEGIN UMS LICENCE-----
    base64 of the payload: canonical JSON
    -----SIGNATURE-----
    base64 of the 64-byte Ed25519 signature over exactly those payload bytes
    -----END UMS LICENCE-----

The payload names the licence id, licensee, issue and expiry dates (UTC; valid through the
expiry day), the model (``users``, ``organisations`` or ``storage_gb``), the limit and the
id of the signing key. Nothing of the payload is interpreted before its signature holds,
except the key id used to tell an altered licence from a foreign one.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

BEGIN = "-----BEGIN UMS LICENCE-----"
SIGNATURE = "-----SIGNATURE-----"
END = "-----END UMS LICENCE-----"
MAX_TEXT = 20_000
USERS, ORGANISATIONS, STORAGE_GB = "users", "organisations", "storage_gb"
MODEL_LABELS = {
    USERS: gettext_lazy("users (mailboxes)"),
    ORGANISATIONS: gettext_lazy("organisations (customers)"),
    STORAGE_GB: gettext_lazy("GB of mailbox storage"),
}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BLOCK = re.compile(
    re.escape(BEGIN)
    + r"\s*(?P<payload>[A-Za-z0-9+/=\s]+?)\s*"
    + re.escape(SIGNATURE)
    + r"\s*(?P<signature>[A-Za-z0-9+/=\s]+?)\s*"
    + re.escape(END)
)


class LicenceError(ValueError):
    """A licence the product refuses; ``code`` says why (malformed, foreign, tampered...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Licence:
    licence_id: str
    licensee: str
    issued: datetime.date
    expires: datetime.date
    model: str
    limit: int
    key_id: str

    @property
    def ends_at(self) -> datetime.datetime:
        """The first instant the licence no longer holds (the day after ``expires``, UTC)."""
        day = self.expires + datetime.timedelta(days=1)
        return datetime.datetime.combine(day, datetime.time.min, tzinfo=datetime.UTC)

    def is_expired(self, now: datetime.datetime) -> bool:
        return now >= self.ends_at

    def days_left(self, now: datetime.datetime) -> int:
        """Whole days until it ends (0 on the last day and after)."""
        return max(0, (self.expires - now.astimezone(datetime.UTC).date()).days)

    @property
    def model_label(self) -> str:
        return str(MODEL_LABELS[self.model])


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _b64(text: str) -> bytes:
    return base64.b64decode("".join(text.split()), validate=True)


def split(text: str) -> tuple[bytes, bytes]:
    """(payload bytes, signature bytes) of the armored block, or a LicenceError."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise LicenceError("malformed", _("This is not a UMS licence (too long)."))
    found = _BLOCK.search(text)
    if found is None:
        raise LicenceError(
            "malformed",
            _("This is not a UMS licence: paste the whole text from “%(begin)s” to “%(end)s”.")
            % {"begin": BEGIN, "end": END},
        )
    try:
        payload, signature = _b64(found["payload"]), _b64(found["signature"])
    except (binascii.Error, ValueError) as exc:
        raise LicenceError(
            "malformed", _("The licence is damaged: its text is not valid base64.")
        ) from exc
    if len(signature) != 64:
        raise LicenceError("malformed", _("The licence is damaged: its signature is incomplete."))
    return payload, signature


def _claimed_key(payload: bytes) -> str:
    """The key id the payload names (read before verification only to word the refusal)."""
    try:
        value = json.loads(payload).get("key")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def verify(text: str, keys: Sequence[bytes]) -> Licence:
    """The licence ``text`` states, if one of ``keys`` signed it; else a LicenceError."""
    payload, signature = split(text)
    by_id = {key_id(raw): raw for raw in keys}
    for raw in by_id.values():
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, payload)
        except InvalidSignature:
            continue
        return _read(payload, key_id(raw))
    if _claimed_key(payload) in by_id:
        raise LicenceError(
            "tampered",
            _("This licence was altered after it was signed: its signature does not match."),
        )
    raise LicenceError(
        "foreign",
        _("This licence was not issued for this product: no key of the product signed it."),
    )


def _invalid(problem: str) -> LicenceError:
    return LicenceError(
        "invalid", _("The licence content is invalid: %(problem)s") % {"problem": problem}
    )


def _date(data: dict[str, Any], name: str) -> datetime.date:
    value = data.get(name)
    try:
        return datetime.date.fromisoformat(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise _invalid(_("“%(name)s” is not a date.") % {"name": name}) from exc


def _read(payload: bytes, signed_by: str) -> Licence:
    """Fields of a payload whose signature holds (checked anyway: signers make mistakes)."""
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise _invalid(_("it is not JSON.")) from exc
    if not isinstance(data, dict) or data.get("format") != 1:
        raise _invalid(_("unknown format."))
    licence_id, licensee = data.get("id"), data.get("licensee")
    if not isinstance(licence_id, str) or not _ID.match(licence_id):
        raise _invalid(_("the licence id is missing or malformed."))
    if (
        not isinstance(licensee, str)
        or not licensee.strip()
        or len(licensee) > 200
        or any(ord(c) < 32 or ord(c) == 127 for c in licensee)
    ):
        raise _invalid(_("the licensee is missing or malformed."))
    model, limit = data.get("model"), data.get("limit")
    if model not in MODEL_LABELS:
        raise _invalid(_("unknown licence model."))
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 2_000_000_000:
        raise _invalid(_("the limit must be a whole number of at least 1."))
    issued, expires = _date(data, "issued"), _date(data, "expires")
    if expires < issued:
        raise _invalid(_("it expires before it was issued."))
    return Licence(
        licence_id=licence_id,
        licensee=licensee.strip(),
        issued=issued,
        expires=expires,
        model=model,
        limit=limit,
        key_id=signed_by,
    )
