"""SSH key material for the controller: generate, serialise, load, fingerprint.

This module owns the controller's own key pair (the one whose public half goes into each
node's ``authorized_keys``) and the textual forms keys travel in:

* private keys as PEM strings (optionally password-protected) so they can be stored
  encrypted in the database or a secrets file;
* public keys in OpenSSH ``"type base64 [comment]"`` form, the form pinned host keys and
  ``authorized_keys`` lines use;
* OpenSSH-style ``SHA256:...`` fingerprints, the form operators compare by eye.

Pure Python on top of paramiko; no Django.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from typing import Literal

import paramiko

__all__ = [
    "InvalidKeyError",
    "fingerprint_sha256",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "normalize_public_key",
    "private_key_to_pem",
    "public_key_openssh",
]

KeyKind = Literal["ecdsa", "rsa"]

# Classes tried in order when loading a PEM of unknown type. Ed25519 can be *loaded*
# (an operator may bring one) even though paramiko 5 cannot generate it.
_PRIVATE_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (
    paramiko.ECDSAKey,
    paramiko.RSAKey,
    paramiko.Ed25519Key,
)


class InvalidKeyError(ValueError):
    """A key string could not be parsed, or a password was wrong or missing."""


def generate_private_key(kind: KeyKind = "ecdsa", *, bits: int | None = None) -> paramiko.PKey:
    """Generate a new controller key pair.

    ECDSA P-256 is the default: paramiko 5 cannot generate Ed25519, and P-256 keys are
    small and fast to sign with (RSA 3072 signing costs several ms per connection).
    """
    if kind == "ecdsa":
        return paramiko.ECDSAKey.generate(bits=bits or 256)
    if kind == "rsa":
        # Below 3072 bits RSA no longer meets current guidance (NIST SP 800-57).
        if bits is not None and bits < 3072:
            raise ValueError("RSA keys must have at least 3072 bits")
        return paramiko.RSAKey.generate(bits=bits or 3072)
    raise ValueError(f"unsupported key kind {kind!r} (use 'ecdsa' or 'rsa')")


def private_key_to_pem(key: paramiko.PKey, password: str | None = None) -> str:
    """Serialise a private key to a PEM string, encrypted when ``password`` is given."""
    buf = io.StringIO()
    key.write_private_key(buf, password=password)
    return buf.getvalue()


def load_private_key(pem: str, password: str | None = None) -> paramiko.PKey:
    """Load a private key from a PEM string of any supported type.

    Raises :class:`InvalidKeyError` when the text is not a key this module understands or
    the password is missing or wrong.
    """
    last_error: Exception | None = None
    for cls in _PRIVATE_KEY_CLASSES:
        try:
            return cls.from_private_key(io.StringIO(pem), password=password)
        except paramiko.PasswordRequiredException as exc:
            raise InvalidKeyError("private key is encrypted: a password is required") from exc
        except (paramiko.SSHException, ValueError, TypeError) as exc:
            # Wrong class for this key, or a wrong password (paramiko cannot tell those
            # apart): try the next class and report the last error if none fits.
            last_error = exc
    raise InvalidKeyError(f"cannot load private key: {last_error}") from last_error


def _split_public_key(line: str) -> tuple[str, bytes, str]:
    """Split ``"type base64 [comment]"`` into (type, blob, comment) and check they agree."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise InvalidKeyError("public key must look like 'type base64 [comment]'")
    key_type, b64 = parts[0], parts[1]
    comment = parts[2] if len(parts) == 3 else ""
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidKeyError("public key data is not valid base64") from exc
    # The blob starts with its own type name; a mismatch means a corrupted or forged line.
    try:
        inner_type = paramiko.Message(blob).get_text()
    except Exception as exc:
        raise InvalidKeyError("public key blob is malformed") from exc
    if inner_type != key_type:
        raise InvalidKeyError(f"key type {key_type!r} does not match key data ({inner_type!r})")
    return key_type, blob, comment


def normalize_public_key(line: str) -> str:
    """Return ``"type base64"`` (comment dropped, whitespace normalised) after validation."""
    key_type, blob, _ = _split_public_key(line)
    return f"{key_type} {base64.b64encode(blob).decode('ascii')}"


def load_public_key(line: str) -> paramiko.PKey:
    """Parse an OpenSSH public key line into a paramiko key object."""
    key_type, blob, _ = _split_public_key(line)
    try:
        return paramiko.PKey.from_type_string(key_type, blob)
    except Exception as exc:  # paramiko raises several types for unknown/broken keys
        raise InvalidKeyError(f"unsupported or malformed {key_type} key: {exc}") from exc


def public_key_openssh(key: paramiko.PKey, comment: str = "") -> str:
    """Return the public half as an ``authorized_keys`` line: ``"type base64 comment"``."""
    if any(ch in comment for ch in "\r\n\0"):
        # A newline in the comment would inject a second authorized_keys line.
        raise ValueError("key comment must be a single line")
    line = f"{key.get_name()} {key.get_base64()}"
    return f"{line} {comment}" if comment else line


def fingerprint_sha256(public_key: str | paramiko.PKey) -> str:
    """OpenSSH-style fingerprint ``SHA256:<base64 without padding>`` of a public key.

    Accepts a ``"type base64 [comment]"`` string or a paramiko key; matches what
    ``ssh-keygen -lf`` prints, so operators can compare it with the node's console.
    """
    if isinstance(public_key, paramiko.PKey):
        blob = public_key.asbytes()
    else:
        _, blob, _ = _split_public_key(public_key)
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
