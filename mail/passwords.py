"""Mailbox passwords: SHA512-CRYPT hashes that Courier authlib verifies, and the rules.

Hashes are ``$6$<16-char salt>$<86-char digest>`` with the default 5000 rounds, exactly what
glibc/libxcrypt ``crypt(3)`` produces (Courier's authlib calls it for ``$6$`` passwords) and
what ``openssl passwd -6 -salt <salt> <password>`` prints. The system libcrypt computes them
when present (``crypt_rn`` releases the GIL, so a bulk import can hash on every core); a pure
Python implementation of the same algorithm (Drepper's "Unix crypt using SHA-256/512") is
the fallback and is checked against it in the tests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import hmac
import os
import re
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.contrib.auth.password_validation import CommonPasswordValidator
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SALT_LENGTH = 16
DEFAULT_ROUNDS = 5000
MIN_LENGTH = 10
PASSPHRASE_LENGTH = 16
MAX_LENGTH = 128

_HASH = re.compile(r"^\$6\$(?:rounds=(\d{4,9})\$)?([./0-9A-Za-z]{1,16})\$([./0-9A-Za-z]{86})$")
# Anything that looks like a stored hash: crypt "$id$...", "{SCHEME}..." or LDAP-style tags.
_LOOKS_HASHED = re.compile(r"^(?:\$[0-9a-z]{1,8}\$|\{[A-Za-z0-9._-]{2,20}\})", re.IGNORECASE)
# Courier userdb field names: "secret|uid=0" must never look like another field.
_USERDB_KEYS = re.compile(
    r"(?:^|[|,;&\s])(?:uid|gid|home|shell|mail|maildir|quota|systempw|imappw|pop3pw|"
    r"webmailpw|options|gecos|sharedgroup|defaultquota)\s*=",
    re.IGNORECASE,
)

# Order in which digest bytes are encoded (crypt-sha512 specification).
_ORDER = [
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54),
    (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60),
    (40, 61, 19), (62, 20, 41),
]  # fmt: skip


def _b64(b2: int, b1: int, b0: int, count: int) -> str:
    word = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _i in range(count):
        out.append(SALT_ALPHABET[word & 63])
        word >>= 6
    return "".join(out)


def sha512_crypt_python(password: bytes, salt: bytes, rounds: int = DEFAULT_ROUNDS) -> str:
    """SHA512-CRYPT in pure Python (the reference algorithm; slow but dependency-free)."""
    salt = salt[:16]
    sha = hashlib.sha512
    alternate = sha(password + salt + password).digest()
    context = sha(password + salt)
    n = len(password)
    while n > 64:
        context.update(alternate)
        n -= 64
    context.update(alternate[:n])
    n = len(password)
    while n:
        context.update(alternate if n & 1 else password)
        n >>= 1
    digest_a = context.digest()
    dp = sha(password * len(password)).digest()
    p_bytes = (dp * (len(password) // 64 + 1))[: len(password)]
    ds = sha(salt * (16 + digest_a[0])).digest()
    s_bytes = (ds * (len(salt) // 64 + 1))[: len(salt)]
    c = digest_a
    for i in range(rounds):
        middle = (s_bytes if i % 3 else b"") + (p_bytes if i % 7 else b"")
        c = sha(p_bytes + middle + c if i & 1 else c + middle + p_bytes).digest()
    encoded = "".join(_b64(c[a], c[b], c[d], 4) for a, b, d in _ORDER) + _b64(0, 0, c[63], 2)
    prefix = "" if rounds == DEFAULT_ROUNDS else f"rounds={rounds}$"
    return f"$6${prefix}{salt.decode('ascii')}${encoded}"


_CRYPT_DATA_SIZE = 1 << 17  # larger than libxcrypt's and glibc's struct crypt_data


def _load_libcrypt() -> Callable[[bytes, bytes], str | None] | None:
    name = ctypes.util.find_library("crypt")
    if not name:
        return None
    try:
        library = ctypes.CDLL(name)
        crypt_rn = library.crypt_rn
    except (OSError, AttributeError):
        return None
    crypt_rn.restype = ctypes.c_char_p
    crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    local = threading.local()

    def call(password: bytes, setting: bytes) -> str | None:
        buffer = getattr(local, "buffer", None)
        if buffer is None:
            buffer = local.buffer = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
        result = crypt_rn(password, setting, buffer, _CRYPT_DATA_SIZE)
        if not result or result.startswith(b"*"):
            return None
        return result.decode("ascii")

    return call


_libcrypt = _load_libcrypt()


def sha512_crypt(password: str, salt: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """The ``$6$`` hash of ``password`` with ``salt`` (system libcrypt when available)."""
    secret = password.encode("utf-8")
    if _libcrypt is not None and b"\x00" not in secret:
        prefix = "" if rounds == DEFAULT_ROUNDS else f"rounds={rounds}$"
        result = _libcrypt(secret, f"$6${prefix}{salt}$".encode("ascii"))
        if result is not None:
            return result
    return sha512_crypt_python(secret, salt.encode("ascii"), rounds)


def new_salt() -> str:
    return "".join(secrets.choice(SALT_ALPHABET) for _i in range(SALT_LENGTH))


def make_hash(password: str) -> str:
    """A fresh SHA512-CRYPT hash with a random 16-character salt and the default rounds."""
    return sha512_crypt(password, new_salt())


def hash_many(secrets_: list[str]) -> list[str]:
    """:func:`make_hash` of each password, on every core (``crypt_rn`` releases the GIL)."""
    if not secrets_:
        return []
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(make_hash, secrets_, chunksize=64))


# What a mailbox imported with a plain password holds until its hash is computed (issue 19):
# crypt format, so every renderer's check accepts it and mail is delivered at once, but no
# password verifies it. crypt(3) reads "pending" as the salt and returns 86 characters of
# digest, never "notyetactive" (Courier's authlib and the Radicale plugin compare that
# result with the stored value); verify() refuses it as malformed.
PENDING_HASH = "$6$pending$notyetactive"


def parse_hash(value: str) -> tuple[str, int] | None:
    """(salt, rounds) of a well-formed ``$6$`` hash, else None."""
    match = _HASH.match(value or "")
    if not match:
        return None
    return match.group(2), int(match.group(1) or DEFAULT_ROUNDS)


def verify(password: str, stored: str) -> bool:
    parsed = parse_hash(stored)
    if parsed is None:
        return False
    salt, rounds = parsed
    return hmac.compare_digest(sha512_crypt(password, salt, rounds), stored)


# Imported hashes: what a migration from another mail system brings (Dovecot writes
# "{SHA512-CRYPT}$6$...", most others the bare "$6$..."). SHA512-CRYPT only: every reader
# of the stored hash (Courier's crypt(3), the Radicale plugin on cloud-files nodes, verify()
# above) takes "$6$"; bcrypt "$2y$" would pass Courier (libxcrypt) but not the others.
IMPORT_PREFIX = "{SHA512-CRYPT}"
# Rounds as crypt(3) writes them back (no leading zero, 1,000 at least); above a million
# every IMAP login would cost over half a second of CPU.
MAX_IMPORTED_ROUNDS = 1_000_000
_IMPORTED = re.compile(
    r"\$6\$(?:rounds=([1-9][0-9]{3,6})\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}", re.ASCII
)


def imported_hash(value: str) -> str:
    """The ``$6$`` hash of an imported password column, checked strictly; ValidationError
    if it is not exactly a SHA512-CRYPT hash that crypt(3) would write."""
    candidate = value[len(IMPORT_PREFIX) :] if value.upper().startswith(IMPORT_PREFIX) else value
    match = _IMPORTED.fullmatch(candidate)
    if match is None or int(match.group(1) or DEFAULT_ROUNDS) > MAX_IMPORTED_ROUNDS:
        raise ValidationError(
            _(
                "A password hash must be SHA512-CRYPT: $6$, optionally rounds=1000 to "
                "1000000, a salt of up to 16 characters and 86 characters of hash "
                "(“{SHA512-CRYPT}” in front is allowed)."
            ),
            code="hash_format",
        )
    return candidate


def looks_like_hash(value: str) -> bool:
    return bool(_LOOKS_HASHED.match(value)) or parse_hash(value) is not None


_common = CommonPasswordValidator()


def check_password(
    password: object, *, local_part: str = "", domain: str = "", current_hash: str = ""
) -> str:
    """Apply the mailbox password rule; return the password or raise a ValidationError.

    Printable ASCII only (mail clients send passwords in inconsistent encodings), 10 to 128
    characters, at least three of lower/upper/digit/symbol unless it is a 16+ character
    passphrase, not a common password, not containing the address, never a stored hash
    (a leaked hash must not work as a password) and nothing that could read as another
    field of a Courier account line (``|uid=0``).
    """
    if not isinstance(password, str):
        raise ValidationError(_("Enter the password as text."), code="invalid")
    problems: list[str] = []
    if not password.isprintable() and any(ord(ch) < 32 or ord(ch) == 127 for ch in password):
        raise ValidationError(
            _("A password cannot contain control characters such as newlines or tabs."),
            code="control_characters",
        )
    if not password.isascii():
        raise ValidationError(
            _("Use only ASCII letters, digits, spaces and symbols in a mailbox password."),
            code="ascii",
        )
    if password != password.strip():
        problems.append(_("A password cannot start or end with a space."))
    if len(password) < MIN_LENGTH:
        problems.append(
            _("A password must be at least %(min)d characters long.") % {"min": MIN_LENGTH}
        )
    if len(password) > MAX_LENGTH:
        problems.append(
            _("A password can be at most %(max)d characters long.") % {"max": MAX_LENGTH}
        )
    if looks_like_hash(password) or (current_hash and hmac.compare_digest(password, current_hash)):
        problems.append(_("A password hash cannot be used as a password."))
    if "|" in password or _USERDB_KEYS.search(password):
        problems.append(
            _("A password cannot contain “|” or “name=” fields used by mail account files.")
        )
    classes = sum(
        [
            any(ch.islower() for ch in password),
            any(ch.isupper() for ch in password),
            any(ch.isdigit() for ch in password),
            any(not ch.isalnum() for ch in password),
        ]
    )
    if len(password) < PASSPHRASE_LENGTH and classes < 3:
        problems.append(
            _(
                "Use at least three of: lowercase letters, uppercase letters, digits and "
                "symbols, or a passphrase of %(min)d characters or more."
            )
            % {"min": PASSPHRASE_LENGTH}
        )
    lowered = password.lower()
    if local_part and len(local_part) >= 3 and local_part.lower() in lowered:
        problems.append(_("A password cannot contain the mailbox name."))
    name = domain.split(".")[0].lower() if domain else ""
    if len(name) >= 4 and name in lowered and len(password) < PASSPHRASE_LENGTH:
        problems.append(_("A password cannot be built around the domain name."))
    try:
        _common.validate(password)
    except ValidationError:
        problems.append(_("This password is too common."))
    if problems:
        raise ValidationError(problems, code="weak")
    return password
