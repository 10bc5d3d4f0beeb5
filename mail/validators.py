"""Strict validation of every name that later reaches Postfix, Courier or a node's commands.

Domains, local parts, addresses, DKIM selectors, folder and header names are checked here and
nowhere else, so the portal, the API, the CSV import and the actions refuse exactly the same
input with the same messages. The rules are deliberately narrower than the RFCs where the RFC
allows characters that are dangerous in map files, maildir paths or command arguments.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import idna
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from ums.validators import no_control_characters

DOMAIN_MAX = 253
LABEL_MAX = 63
LOCAL_PART_MAX = 64
ADDRESS_MAX = 254
SELECTOR_MAX = 63
FOLDER_MAX = 200
HEADER_NAME_MAX = 76

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_TLD = re.compile(r"^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
# RFC 5322 "atext": what an unquoted (dot-atom) local part may contain.
_ATEXT = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
# What we accept for addresses we host: safe in maps, maildir paths and argv.
_LOCAL_SAFE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]*[a-z0-9_-])?$")
# External targets (forwarding, alias members) may also carry "+tag" and "=" (SRS, VERP).
_LOCAL_TARGET_SAFE = re.compile(r"^[a-z0-9_](?:[a-z0-9._+=-]*[a-z0-9_+=-])?$")
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
_FOLDER_FORBIDDEN = set('"\\*%&~`|<>{}$#')
RESERVED_LOCAL_PARTS = ("postmaster", "abuse")


def _fail(message: str, code: str) -> None:
    raise ValidationError(message, code=code)


def normalise_domain(value: object) -> tuple[str, str]:
    """Validate a domain name; return (ASCII IDNA form, Unicode form), both lowercase.

    Refuses shell and map metacharacters (``$(id).example.com``), empty labels (``a..b``),
    names longer than 253 characters, a bare TLD, labels starting or ending with a hyphen,
    underscores and anything that is not a valid IDNA 2008 name.
    """
    if not isinstance(value, str):
        _fail(_("Enter a domain name as text."), "invalid")
    # IDNA checks are costly and a CSV import repeats the same few domains: remember the
    # valid ones (a refused name raises and is never cached).
    return _normalise_domain(value)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=4096)
def _normalise_domain(value: str) -> tuple[str, str]:
    no_control_characters(value)
    if value != value.strip() or any(ch.isspace() for ch in value):
        _fail(_("A domain name cannot contain spaces."), "spaces")
    if not value:
        _fail(_("Enter a domain name."), "required")
    if len(value) > DOMAIN_MAX:
        _fail(
            _("A domain name can be at most %(max)d characters long.") % {"max": DOMAIN_MAX},
            "too_long",
        )
    if value.endswith("."):
        _fail(_("Leave out the final dot."), "trailing_dot")
    if ".." in value or value.startswith("."):
        _fail(_("A domain name cannot contain empty labels (“..” or a leading dot)."), "empty")
    if "_" in value:
        _fail(_("Underscores are not allowed in a domain name."), "underscore")
    if "." not in value:
        _fail(
            _("Enter a full domain name such as example.com, not a bare top-level domain."),
            "bare_tld",
        )
    ascii_chars = value.isascii()
    if ascii_chars:
        lowered = value.lower()
        bad = sorted({ch for ch in lowered if not (ch.isalnum() or ch in ".-")})
        if bad:
            _fail(
                _("A domain name cannot contain “%(chars)s”.") % {"chars": "".join(bad)},
                "characters",
            )
    for label in value.split("."):
        if label.startswith("-") or label.endswith("-"):
            _fail(_("A part of a domain name cannot start or end with a hyphen."), "hyphen")
        if label.isascii() and len(label) > LABEL_MAX:
            _fail(
                _("Each part of a domain name must be 1 to %(max)d characters long.")
                % {"max": LABEL_MAX},
                "label_length",
            )
    try:
        ascii_name = idna.encode(value, uts46=True, std3_rules=True).decode("ascii")
        unicode_name = idna.decode(ascii_name)
    except (idna.IDNAError, UnicodeError, ValueError):
        _fail(
            _("“%(value)s” is not a valid (internationalised) domain name.") % {"value": value},
            "idna",
        )
    labels = ascii_name.split(".")
    if len(ascii_name) > DOMAIN_MAX:
        _fail(
            _("In its ASCII form the domain name is longer than %(max)d characters.")
            % {"max": DOMAIN_MAX},
            "too_long",
        )
    if len(labels) < 2:
        _fail(_("Enter a full domain name such as example.com."), "bare_tld")
    for label in labels:
        if not label or len(label) > LABEL_MAX:
            _fail(
                _("Each part of a domain name must be 1 to %(max)d characters long.")
                % {"max": LABEL_MAX},
                "label_length",
            )
        if label.startswith("-") or label.endswith("-"):
            _fail(_("A part of a domain name cannot start or end with a hyphen."), "hyphen")
        if not _LABEL.match(label):
            _fail(
                _("“%(label)s” is not a valid part of a domain name.") % {"label": label}, "label"
            )
    if not _TLD.match(labels[-1]):
        _fail(_("The last part of a domain name must be a real top-level domain."), "tld")
    return ascii_name, unicode_name


def validate_domain(value: str) -> None:
    normalise_domain(value)


def _rfc5321_local_part(value: str) -> None:
    """The RFC 5321 dot-string rules, with a specific message for each way to break them."""
    no_control_characters(value)
    if not value:
        _fail(_("Enter the part of the address before the @."), "required")
    if len(value) > LOCAL_PART_MAX:
        _fail(
            _("The part before the @ can be at most %(max)d characters long.")
            % {"max": LOCAL_PART_MAX},
            "too_long",
        )
    if any(ch.isspace() for ch in value):
        _fail(_("An address cannot contain spaces."), "spaces")
    if '"' in value:
        _fail(_("Quoted addresses are not accepted."), "quoted")
    if value.startswith(".") or value.endswith("."):
        _fail(_("The part before the @ cannot start or end with a dot."), "dot_edge")
    if ".." in value:
        _fail(_("The part before the @ cannot contain two dots in a row."), "double_dot")
    bad = sorted({ch for ch in value if ch not in _ATEXT and ch != "."})
    if bad:
        _fail(
            _("The part before the @ cannot contain “%(chars)s”.") % {"chars": "".join(bad)},
            "characters",
        )


def normalise_local_part(value: object) -> str:
    """Validate a local part for an address we host; return it lowercased.

    RFC 5321 first, then the house rule: ASCII letters, digits, ``. _ -``, starting with a
    letter or digit (a leading hyphen could be read as an option by a command on a node),
    and no ``+`` (reserved for address extensions such as ``user+tag``).
    """
    if not isinstance(value, str):
        _fail(_("Enter the part before the @ as text."), "invalid")
    _rfc5321_local_part(value)
    lowered = value.lower()
    if "+" in lowered:
        _fail(_("“+” is reserved for address extensions (user+tag)."), "plus")
    if not _LOCAL_SAFE.match(lowered):
        _fail(
            _(
                "Use only letters a-z, digits and . _ - in the part before the @, starting "
                "with a letter or digit."
            ),
            "characters",
        )
    return lowered


def validate_local_part(value: str) -> None:
    normalise_local_part(value)


def normalise_address(value: object, *, hosted: bool = False) -> str:
    """Validate a full address (``local@domain``); return it in lowercase ASCII form.

    ``hosted`` applies the stricter local-part rule of addresses we host; otherwise external
    targets may also use ``+`` and ``=``.
    """
    if not isinstance(value, str):
        _fail(_("Enter an email address as text."), "invalid")
    no_control_characters(value)
    if value.count("@") != 1:
        _fail(_("Enter an email address of the form name@example.com."), "invalid")
    local, domain = value.split("@")
    if hosted:
        local = normalise_local_part(local)
    else:
        _rfc5321_local_part(local)
        local = local.lower()
        if not _LOCAL_TARGET_SAFE.match(local):
            _fail(
                _("Use only letters a-z, digits and . _ - + = in the part before the @."),
                "characters",
            )
    ascii_domain, _unicode = normalise_domain(domain)
    address = f"{local}@{ascii_domain}"
    if len(address) > ADDRESS_MAX:
        _fail(
            _("An email address can be at most %(max)d characters long.") % {"max": ADDRESS_MAX},
            "too_long",
        )
    return address


def normalise_address_list(
    values: object, *, field_max: int = 500, allow_empty: bool = True
) -> list[str]:
    """A list of addresses, each validated, duplicates removed (order kept)."""
    if not isinstance(values, list | tuple):
        _fail(_("Enter a list of email addresses."), "invalid")
    if len(values) > field_max:
        _fail(_("At most %(max)d addresses are allowed here.") % {"max": field_max}, "too_many")
    if not values and not allow_empty:
        _fail(_("Enter at least one email address."), "required")
    seen: dict[str, None] = {}
    for value in values:
        try:
            seen[normalise_address(value)] = None
        except ValidationError as exc:
            shown = value if isinstance(value, str) else repr(value)
            raise ValidationError(
                _("“%(value)s”: %(error)s")
                % {"value": shown[:80].encode("unicode_escape").decode(), "error": exc.messages[0]},
                code=getattr(exc, "code", "invalid"),
            ) from exc
    return list(seen)


def normalise_sender_entry(value: object) -> str:
    """A sender allow/block list entry: ``user@example.com``, ``@example.com`` or a domain."""
    if not isinstance(value, str):
        _fail(_("Enter an address or a domain as text."), "invalid")
    if value.startswith("@"):
        return "@" + normalise_domain(value[1:])[0]
    if "@" in value:
        return normalise_address(value)
    return normalise_domain(value)[0]


def normalise_selector(value: object) -> str:
    """A DKIM selector: lowercase letters, digits and inner hyphens, 1-63 characters."""
    if not isinstance(value, str) or not value:
        _fail(_("Enter a selector."), "required")
    no_control_characters(value)
    if len(value) > SELECTOR_MAX:
        _fail(
            _("A selector can be at most %(max)d characters long.") % {"max": SELECTOR_MAX},
            "too_long",
        )
    if not _SELECTOR.match(value):
        _fail(
            _(
                "A selector may contain only lowercase letters a-z, digits and hyphens, and "
                "cannot start or end with a hyphen."
            ),
            "selector",
        )
    return value


def validate_selector(value: str) -> None:
    normalise_selector(value)


def validate_folder(value: object) -> str:
    """An IMAP folder name for ``fileinto``: printable, no wildcards or path tricks."""
    if not isinstance(value, str) or not value.strip():
        _fail(_("Enter a folder name."), "required")
    no_control_characters(value)
    if len(value) > FOLDER_MAX:
        _fail(_("A folder name can be at most %(max)d characters.") % {"max": FOLDER_MAX}, "long")
    if value != value.strip():
        _fail(_("A folder name cannot start or end with spaces."), "untrimmed")
    parts = value.replace(".", "/").split("/")
    if any(part in ("", "..") for part in parts) or value.startswith(("/", ".")):
        _fail(_("A folder name cannot contain empty parts or start with “.” or “/”."), "path")
    bad = sorted({ch for ch in value if ch in _FOLDER_FORBIDDEN})
    if bad:
        _fail(
            _("A folder name cannot contain “%(chars)s”.") % {"chars": "".join(bad)}, "characters"
        )
    return unicodedata.normalize("NFC", value)


def validate_header_name(value: object) -> str:
    """A message header field name (RFC 5322): printable ASCII without spaces or colon."""
    if not isinstance(value, str) or not value:
        _fail(_("Enter a header name."), "required")
    if len(value) > HEADER_NAME_MAX or not _HEADER_NAME.match(value):
        _fail(
            _("A header name may contain only printable ASCII characters without spaces or “:”."),
            "header",
        )
    return value


def is_reserved_local_part(local_part: str) -> bool:
    return local_part.lower() in RESERVED_LOCAL_PARTS


# Letters (any script), digits, spaces and a little punctuation: the name is shown in
# Roundcube's pages and window title, so nothing that could be markup or a quote.
_WEBMAIL_NAME_RE = re.compile(r"^[\w][\w .,&()'!-]{0,63}$")


def webmail_name(value: object) -> str:
    """A domain's webmail product name, or "" for the deployment's default."""
    if not isinstance(value, str):
        _fail(_("Enter text."), "invalid")
    text = unicodedata.normalize("NFC", value)  # type: ignore[arg-type]
    if text == "":
        return ""
    if len(text) > 64 or text != text.strip() or not _WEBMAIL_NAME_RE.match(text):
        _fail(
            _("Use at most 64 letters, digits, spaces and . , & ( ) ' ! -"),
            "invalid",
        )
    return text
