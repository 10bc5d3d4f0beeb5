"""The controller key pair: generated on first use, stored encrypted, rotated by version."""

from __future__ import annotations

import paramiko
from django.db import IntegrityError, transaction

from .connector.keys import (
    fingerprint_sha256,
    generate_private_key,
    load_private_key,
    private_key_to_pem,
    public_key_openssh,
)
from .models import ControllerKey

KEY_COMMENT = "ums-controller"


def current() -> ControllerKey:
    """The current key, created on first use (safe when two processes race)."""
    key = ControllerKey.objects.filter(retired_at__isnull=True).order_by("-version").first()
    if key is not None:
        return key
    try:
        with transaction.atomic():
            return _create(version=1)
    except IntegrityError:
        return ControllerKey.objects.filter(retired_at__isnull=True).order_by("-version").first()


def _create(version: int) -> ControllerKey:
    private = generate_private_key("ecdsa")
    public = public_key_openssh(private, f"{KEY_COMMENT}-v{version}")
    return ControllerKey.objects.create(
        version=version,
        private_key_pem=private_key_to_pem(private),
        public_key=public,
        fingerprint=fingerprint_sha256(public),
    )


def create_next() -> ControllerKey:
    """A new key version (rotation); older versions stay valid until nodes have moved."""
    with transaction.atomic():
        latest = ControllerKey.objects.select_for_update().order_by("-version").first()
        return _create(version=(latest.version + 1) if latest else 1)


def by_version(version: int | None) -> ControllerKey:
    if version is None:
        return current()
    return ControllerKey.objects.get(version=version)


def private_key(key: ControllerKey) -> paramiko.PKey:
    return load_private_key(key.private_key_pem)


def current_public_key() -> str:
    return current().public_key
