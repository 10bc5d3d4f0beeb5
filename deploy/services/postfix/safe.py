"""Last-line checks on names before they are written into a node's files.

``mail.validators`` already refuses unsafe domains and local parts at the API and the
portal; these checks repeat the house rules independently so a row that bypassed them
(raw SQL, an old import) can never break out of a map line, a userdb record or a path.
Shared by the Postfix and Courier renderers.
"""

from __future__ import annotations

import re

_DOMAIN = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$"
)
# Addresses we host: letters, digits and . _ - (no leading punctuation).
_LOCAL = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9_-])?$")
# Targets outside our domains may also carry + and = (address extensions, SRS).
_TARGET_LOCAL = re.compile(r"^[a-z0-9_](?:[a-z0-9._+=-]{0,62}[a-z0-9_+=-])?$")
# SHA512-CRYPT (or other modular crypt) hashes: no separators of any file format we write.
_CRYPT = re.compile(r"^\$[0-9a-z]+\$[./0-9A-Za-z$=]{1,200}$")


class UnsafeName(ValueError):
    """A value that must not reach a node's configuration."""


def domain(value: str) -> str:
    if not isinstance(value, str) or not _DOMAIN.match(value) or ".." in value:
        raise UnsafeName(f"refusing unsafe domain name {value!r}")
    return value


def local_part(value: str) -> str:
    if not isinstance(value, str) or not _LOCAL.match(value) or ".." in value:
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
    if not sep or not _TARGET_LOCAL.match(local) or ".." in local:
        raise UnsafeName(f"refusing unsafe target address {value!r}")
    domain(dom)
    return value


def password_hash(value: str) -> str:
    if not isinstance(value, str) or not _CRYPT.match(value):
        raise UnsafeName("refusing a password hash that is not in crypt format")
    return value
