"""Reading what a held message says about itself: the hold header and a few headers.

Everything parsed here comes from a message sent from the outside, so parsing never
fails: unknown reasons become ``other``, numbers that do not parse are dropped, text is
stripped of control characters and cut to the column sizes.

The content filter adds exactly one header to mail it holds::

    X-UMS-Hold: <reason>; <key>=<value>; ...

with reason ``spam``, ``virus``, ``attachment``, ``sender``, ``header`` or ``dmarc`` and
the keys ``score``, ``rules`` (spam), ``virus``, ``attachment`` and ``type`` (attachment),
``sender`` (also the failing From domain of a ``dmarc`` hold, with ``policy``, the
domain's published p=, kept in ``detail``). A sender can forge such a header too; the
filter strips incoming ones and puts its own on top, so the first occurrence counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from email.header import decode_header, make_header
from email.parser import HeaderParser
from email.policy import compat32

import idna

from .models import Reason

HOLD_HEADER = "X-UMS-Hold"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_RULE = re.compile(r"^[A-Za-z0-9_.:+-]{1,64}$")
MAX_RULES = 100
# DecimalField(max_digits=8, decimal_places=2).
MAX_SCORE = Decimal("999999.99")


def clean_text(value: object, limit: int) -> str:
    """One line of untrusted text: control characters become spaces, cut to ``limit``."""
    if not isinstance(value, str):
        return ""
    return _CONTROL.sub(" ", value).strip()[:limit]


@dataclass
class HoldInfo:
    reason: str = Reason.OTHER
    detail: str = ""
    score: Decimal | None = None
    rules: list[str] = field(default_factory=list)
    virus: str = ""
    attachment: str = ""
    attachment_type: str = ""
    sender: str = ""


def parse_hold_header(value: str | None) -> HoldInfo:
    """The filter's verdict from an ``X-UMS-Hold`` value; no header means ``other``."""
    if not value or not isinstance(value, str):
        return HoldInfo()
    text = clean_text(value, 2000)
    parts = [p.strip() for p in text.split(";")]
    reason = parts[0].lower()
    info = HoldInfo(
        reason=reason if reason in Reason.values and reason != Reason.OTHER else Reason.OTHER,
        detail=text[:1000],
    )
    for part in parts[1:]:
        key, sep, raw = part.partition("=")
        if not sep:
            continue
        key, raw = key.strip().lower(), raw.strip()
        if key == "score" and info.score is None:
            info.score = _score(raw)
        elif key == "rules" and not info.rules:
            rules = [r.strip() for r in raw.split(",")]
            info.rules = [r for r in rules if _RULE.match(r)][:MAX_RULES]
        elif key == "virus" and not info.virus:
            info.virus = raw[:255]
        elif key == "attachment" and not info.attachment:
            info.attachment = raw[:255]
        elif key == "type" and not info.attachment_type:
            info.attachment_type = raw[:255]
        elif key == "sender" and not info.sender:
            info.sender = raw[:320]
    return info


def _score(raw: str) -> Decimal | None:
    try:
        number = Decimal(raw)
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite() or abs(number) > MAX_SCORE:
        return None
    return number.quantize(Decimal("0.01"))


def decode_words(value: str | None, limit: int) -> str:
    """A header value with RFC 2047 encoded words decoded, as one clean line."""
    if not value:
        return ""
    try:
        text = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, TypeError, AssertionError):
        text = value
    return clean_text(text, limit)


@dataclass
class HeaderSummary:
    subject: str
    hold: HoldInfo


def summarise_headers(text: str) -> HeaderSummary:
    """Subject and hold verdict from a header block (as ``postcat -h`` prints it)."""
    try:
        message = HeaderParser(policy=compat32).parsestr(text)
        subject = message.get("Subject")
        hold = message.get(HOLD_HEADER)
    except Exception:  # a malformed header block must not stop ingestion
        subject, hold = None, None
    return HeaderSummary(
        subject=decode_words(subject if isinstance(subject, str) else None, 1000),
        hold=parse_hold_header(hold if isinstance(hold, str) else None),
    )


def address_domain(address: str) -> str:
    """The lower-case ASCII (IDNA) domain of an address, "" when it has none."""
    _local, sep, domain = (address or "").rpartition("@")
    if not sep:
        return ""
    return idna_name(domain)


def idna_name(domain: str) -> str:
    domain = domain.strip().strip(".").lower()
    if not domain:
        return ""
    if domain.isascii():
        return domain[:255]
    try:
        return idna.encode(domain, uts46=True).decode("ascii")[:255]
    except (idna.IDNAError, UnicodeError, ValueError):
        return clean_text(domain, 255)
