"""Last-line checks on names before they are written into a node's files.

``mail.validators`` already refuses unsafe domains and local parts at the API and the
portal; these checks repeat the house rules independently so a row that bypassed them
(raw SQL, an old import) can never break out of a map line, a userdb record or a path.
Shared by the Postfix and Courier renderers.

Every pattern is applied with ``fullmatch``: ``$`` in ``match`` would also accept a
value ending in a newline, which is exactly what must never reach a map or a userdb.

At 100,000 mailboxes the checks themselves are cheap; calling four small functions per
mailbox in each renderer was not (about a second per converge). :func:`hosted_mailboxes`
therefore checks each mailbox once per renderer with one pattern: its domain must be one
of the hosted domains the caller already checked, its local part must pass the pattern,
and its address must be exactly ``local@domain``; the renderers then build lines with
plain string operations from these checked values.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from deploy.node_settings import control_characters

if TYPE_CHECKING:
    from deploy.services.base import MailboxData

_DOMAIN = re.compile(
    r"(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"
)
# Addresses we host: letters, digits and . _ - (no leading punctuation).
_LOCAL = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9_-])?")
# Targets outside our domains may also carry + and = (address extensions, SRS).
_TARGET_LOCAL = re.compile(r"[a-z0-9_](?:[a-z0-9._+=-]{0,62}[a-z0-9_+=-])?")
# SHA512-CRYPT (or other modular crypt) hashes: no separators of any file format we write.
_CRYPT = re.compile(r"\$[0-9a-z]+\$[./0-9A-Za-z$=]{1,200}")


class UnsafeName(ValueError):
    """A value that must not reach a node's configuration."""


def config_value(key: str, value: str) -> str:
    """``value`` for ``key = value`` in a config file: no control characters (a newline
    would start a line of its own choosing)."""
    if reason := control_characters(str(value)):
        raise UnsafeName(f"refusing {key} = {value!r}: {reason}")
    return value


def domain(value: str) -> str:
    if not isinstance(value, str) or not _DOMAIN.fullmatch(value) or ".." in value:
        raise UnsafeName(f"refusing unsafe domain name {value!r}")
    return value


def local_part(value: str) -> str:
    if not isinstance(value, str) or not _LOCAL.fullmatch(value) or ".." in value:
        raise UnsafeName(f"refusing unsafe local part {value!r}")
    return value


def hosted_address(value: str) -> str:
    local, sep, dom = (value or "").partition("@")
    if not sep:
        raise UnsafeName(f"refusing unsafe address {value!r}")
    local_part(local)
    domain(dom)
    return value


def target_address(value: str) -> str:
    """An alias/forward target: any safe address (external ones may use + and =)."""
    local, sep, dom = (value or "").partition("@")
    if not sep or not _TARGET_LOCAL.fullmatch(local) or ".." in local:
        raise UnsafeName(f"refusing unsafe target address {value!r}")
    domain(dom)
    return value


def password_hash(value: str) -> str:
    if not isinstance(value, str) or not _CRYPT.fullmatch(value):
        raise UnsafeName("refusing a password hash that is not in crypt format")
    return value


def hosted_mailboxes(
    mailboxes: Iterable[MailboxData], hosted: Collection[str]
) -> list[MailboxData]:
    """The enabled mailboxes of ``hosted`` domains, each checked once (see the module doc).

    ``hosted`` must hold domain names already passed through :func:`domain`: membership
    is what checks ``m.domain``. Afterwards ``m.email``, ``m.local_part`` and ``m.domain``
    are safe to write as they are; raises :class:`UnsafeName` for the first bad one.
    """
    checked = []
    fullmatch = _LOCAL.fullmatch
    for m in mailboxes:
        if not m.enabled or m.domain not in hosted:
            continue
        local = m.local_part
        if not isinstance(local, str) or not fullmatch(local) or ".." in local:
            raise UnsafeName(f"refusing unsafe local part {local!r}")
        if m.email != f"{local}@{m.domain}":
            # Not the canonical form (never written so by the API): check it on its own.
            hosted_address(m.email)
        checked.append(m)
    return checked
