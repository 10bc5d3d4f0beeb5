"""Client-side encryption of everything written to a backup target.

The key is ``settings.UMS_BACKUP_KEY`` (32 bytes in urlsafe base64, the Fernet key
format; generated once under ``UMS_VAR_DIR/backup_key`` when unset). Targets only ever
see ciphertext: a stolen bucket or share reveals nothing, and a lost key makes every
backup unreadable, hence the README's advice to keep a copy of it away from the
controller.

Format (streaming, so a dump of any size never has to fit in memory)::

    header  = b"UMSBK1" | key id (8 bytes: sha256(key)[:8]) | nonce prefix (8 random bytes)
              | chunk size (4 bytes, big endian)
    chunk i = length (4 bytes, big endian) | AES-256-GCM(key, nonce = prefix | i (4 bytes),
              plaintext, aad = header | i | final flag)

The last chunk carries the final flag (it may be empty), so a truncated object fails
to decrypt instead of silently yielding a shorter dump; reordered or swapped chunks fail
their tag. The key id tells "wrong key" apart from "damaged data".
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

MAGIC = b"UMSBK1"
CHUNK_SIZE = 1024 * 1024
HEADER_SIZE = len(MAGIC) + 8 + 8 + 4
_MAX_CHUNK = 64 * 1024 * 1024


class DecryptionError(Exception):
    """The object is not ours, was made with another key, or is damaged or truncated."""


def key_bytes(key: str | None = None) -> bytes:
    raw = base64.urlsafe_b64decode((key or settings.UMS_BACKUP_KEY).encode())
    if len(raw) != 32:
        raise ValueError("UMS_BACKUP_KEY must be 32 bytes in urlsafe base64")
    return raw


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:8]


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">I?", index, final)


def encrypt_stream(
    chunks: Iterable[bytes], *, key: str | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """The encrypted form of the concatenated ``chunks``, as a stream of pieces."""
    raw = key_bytes(key)
    aead = AESGCM(raw)
    prefix = os.urandom(8)
    header = MAGIC + key_id(raw) + prefix + struct.pack(">I", chunk_size)
    yield header
    index = 0
    buffer = bytearray()

    def seal(data: bytes, final: bool) -> bytes:
        nonce = prefix + struct.pack(">I", index)
        sealed = aead.encrypt(nonce, data, _aad(header, index, final))
        return struct.pack(">I", len(sealed)) + sealed

    for piece in chunks:
        buffer += piece
        # Keep at least one byte back: the final chunk must be the one sealed as final.
        while len(buffer) > chunk_size:
            yield seal(bytes(buffer[:chunk_size]), False)
            del buffer[:chunk_size]
            index += 1
            if index >= 2**32 - 1:
                raise ValueError("stream too long for one backup object")
    yield seal(bytes(buffer), True)


def encrypt_bytes(data: bytes, *, key: str | None = None) -> bytes:
    return b"".join(encrypt_stream([data], key=key))


class _Reader:
    """Exact reads over an iterator of byte pieces."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._iter = iter(chunks)
        self._buffer = bytearray()

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            piece = next(self._iter, None)
            if piece is None:
                break
            self._buffer += piece
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


def decrypt_stream(chunks: Iterable[bytes], *, key: str | None = None) -> Iterator[bytes]:
    """The plaintext of an object made by :func:`encrypt_stream`; raises
    :class:`DecryptionError` on a wrong key, damage or truncation."""
    raw = key_bytes(key)
    aead = AESGCM(raw)
    reader = _Reader(chunks)
    header = reader.read(HEADER_SIZE)
    if len(header) != HEADER_SIZE or not header.startswith(MAGIC):
        raise DecryptionError("not a UMS backup object (unknown header)")
    if header[len(MAGIC) : len(MAGIC) + 8] != key_id(raw):
        raise DecryptionError("this object was encrypted with another backup key")
    prefix = header[len(MAGIC) + 8 : len(MAGIC) + 16]
    index = 0
    while True:
        length_bytes = reader.read(4)
        if len(length_bytes) != 4:
            raise DecryptionError("the object is truncated (no final chunk)")
        (length,) = struct.unpack(">I", length_bytes)
        if length > _MAX_CHUNK:
            raise DecryptionError("the object is damaged (absurd chunk length)")
        sealed = reader.read(length)
        if len(sealed) != length:
            raise DecryptionError("the object is truncated")
        nonce = prefix + struct.pack(">I", index)
        for final in (False, True):
            try:
                plain = aead.decrypt(nonce, sealed, _aad(header, index, final))
            except InvalidTag:
                continue
            break
        else:
            raise DecryptionError(f"the object is damaged (chunk {index} fails its check)")
        yield plain
        if final:
            if reader.read(1):
                raise DecryptionError("the object is damaged (data after the final chunk)")
            return
        index += 1


def decrypt_bytes(data: bytes, *, key: str | None = None) -> bytes:
    return b"".join(decrypt_stream([data], key=key))
