#!/usr/bin/env python3
"""Issue UMS licences: the vendor's tool, never shipped inside the product.

The product (``licensing/``) holds only public keys; the private key that signs licences
stays with whoever issues them. Two commands::

    # once: a key pair (the private key file is written 0600; keep it offline)
    python scripts/sign_licence.py genkey --private vendor-key.pem --public vendor-key.pub

    # per customer: a licence valid 365 days from today (UTC)
    python scripts/sign_licence.py sign --key vendor-key.pem --licensee "Example ISP" \\
        --model users --limit 5000 [--days 365] [--issued 2026-12-07] [--id LIC-0042] \\
        [--output example-isp.licence]

``genkey`` prints the public key (base64 of its 32 raw bytes): add that line to
``licensing/keys.py`` (``BUILTIN_PUBLIC_KEYS``) and release the product; licences signed
with the matching private key are accepted from then on. Only the standard library and
``cryptography`` are used, so the script runs without the product's code or settings.

The licence file: a readable summary (not trusted; for people), then the armored block whose
payload (canonical JSON, base64) is what the Ed25519 signature covers.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

BEGIN = "-----BEGIN UMS LICENCE-----"
SIGNATURE = "-----SIGNATURE-----"
END = "-----END UMS LICENCE-----"
MODELS = ("users", "organisations", "storage_gb")
FORMAT = 1


def key_id(public_raw: bytes) -> str:
    """Short id of a public key, written into each licence so the product names its key."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def public_raw(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def load_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"{path}: not an Ed25519 private key")
    return key


def _wrap(data: bytes) -> str:
    text = base64.b64encode(data).decode("ascii")
    return "\n".join(text[i : i + 64] for i in range(0, len(text), 64))


def sign_payload(payload: dict, private: Ed25519PrivateKey) -> str:
    """The licence text for ``payload`` (the ``key`` field is filled in here)."""
    body = {**payload, "format": FORMAT, "key": key_id(public_raw(private))}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    signature = private.sign(data)
    summary = [
        "UMS licence",
        f"Licensee: {body.get('licensee', '')}",
        f"Licence: {body.get('id', '')}",
        f"Valid: {body.get('issued', '')} to {body.get('expires', '')} (UTC)",
        f"Limit: {body.get('limit', '')} {body.get('model', '')}",
        "",
    ]
    return "\n".join([*summary, BEGIN, _wrap(data), SIGNATURE, _wrap(signature), END, ""])


def make_payload(
    *,
    licensee: str,
    model: str,
    limit: int,
    issued: datetime.date,
    days: int = 365,
    licence_id: str | None = None,
) -> dict:
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}")
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return {
        "id": licence_id or f"LIC-{issued:%Y%m%d}-{secrets.token_hex(4).upper()}",
        "licensee": licensee,
        "issued": issued.isoformat(),
        "expires": (issued + datetime.timedelta(days=days)).isoformat(),
        "model": model,
        "limit": limit,
    }


def genkey(private_path: Path, public_path: Path | None) -> str:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    public = base64.b64encode(public_raw(private)).decode("ascii")
    if public_path is not None:
        public_path.write_text(public + "\n")
    return public


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("genkey", help="create a signing key pair")
    gen.add_argument("--private", type=Path, required=True, help="private key file to create")
    gen.add_argument("--public", type=Path, help="also write the public key (base64) here")
    sign = commands.add_parser("sign", help="sign a licence")
    sign.add_argument("--key", type=Path, required=True, help="private key (PEM)")
    sign.add_argument("--licensee", required=True)
    sign.add_argument("--model", choices=MODELS, required=True)
    sign.add_argument("--limit", type=int, required=True)
    sign.add_argument("--days", type=int, default=365, help="validity from --issued (365)")
    sign.add_argument("--issued", type=datetime.date.fromisoformat, help="default: today UTC")
    sign.add_argument("--id", dest="licence_id", help="licence id (default: generated)")
    sign.add_argument("--output", type=Path, help="write here instead of standard output")
    args = parser.parse_args(argv)
    if args.command == "genkey":
        public = genkey(args.private, args.public)
        print(f"public key (add to licensing/keys.py): {public}")
        return 0
    issued = args.issued or datetime.datetime.now(datetime.UTC).date()
    payload = make_payload(
        licensee=args.licensee,
        model=args.model,
        limit=args.limit,
        issued=issued,
        days=args.days,
        licence_id=args.licence_id,
    )
    text = sign_payload(payload, load_private(args.key))
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
