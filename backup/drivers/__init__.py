"""Target drivers (S3, CIFS, NFS) and the encrypted put/get every caller uses."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from typing import Any

from backup import crypto

from .base import Target, TargetError, check_name

__all__ = [
    "Target",
    "TargetError",
    "check_name",
    "driver_for",
    "get_decrypted",
    "probe",
    "put_encrypted",
]


def driver_for(target: Any) -> Target:
    """The driver of a :class:`backup.models.BackupTarget` row."""
    kind = target.kind
    if kind == "s3":
        from .s3 import S3Target

        return S3Target(
            endpoint_url=target.s3_endpoint,
            region=target.s3_region,
            bucket=target.s3_bucket,
            prefix=target.s3_prefix,
            access_key=target.s3_access_key,
            secret_key=target.s3_secret_key,
            server_side_encryption=target.s3_server_side_encryption,
        )
    if kind == "cifs":
        from .cifs import CifsTarget

        return CifsTarget(
            server=target.cifs_server,
            port=target.cifs_port,
            share=target.cifs_share,
            path=target.cifs_path,
            username=target.cifs_username,
            password=target.cifs_password,
            domain=target.cifs_domain,
        )
    if kind == "nfs":
        from .nfs import NfsTarget

        return NfsTarget(target.nfs_path)
    raise TargetError(f"unknown target kind {kind!r}")


def put_encrypted(driver: Target, name: str, chunks: Iterable[bytes]) -> int:
    """Encrypt with the backup key and store; the bytes written (ciphertext)."""
    return driver.put(name, crypto.encrypt_stream(chunks))


def get_decrypted(driver: Target, name: str) -> Iterator[bytes]:
    return crypto.decrypt_stream(driver.get(name))


def probe(driver: Target) -> str:
    """Write, read back and delete a small encrypted object; the probe's name.

    Raises :class:`TargetError` (or :class:`backup.crypto.DecryptionError`) saying what
    went wrong.
    """
    token = secrets.token_hex(16)
    name = f"ums-probe/{token}"
    payload = f"UMS backup target probe {token}\n".encode()
    put_encrypted(driver, name, [payload])
    try:
        back = b"".join(get_decrypted(driver, name))
        if back != payload:
            raise TargetError("the probe object read back differs from what was written")
        stored = b"".join(driver.get(name))
        if payload in stored:
            raise TargetError("the probe was stored in clear: client-side encryption failed")
    finally:
        driver.delete(name)
    if name in driver.list("ums-probe"):
        raise TargetError("the probe object could not be deleted")
    return name
