"""DKIM keys: generation, the DNS TXT record to publish, and suggested SPF and DMARC records.

Keys are RSA (2048 bits by default). The private key is returned as PEM for storage in an
encrypted column; only the public half ever appears in the API or the portal.
"""

from __future__ import annotations

import base64
import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

TXT_CHUNK = 255


def generate(bits: int) -> tuple[str, str]:
    """A new key pair: (private key PEM, public key as base64 DER for the ``p=`` tag)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, base64.b64encode(public_der).decode("ascii")


def default_selector(today: datetime.date | None = None) -> str:
    """A selector naming the month the key was made (``s202611``), easy to rotate monthly."""
    today = today or datetime.date.today()
    return f"s{today:%Y%m}"


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}."


def record_value(public_key: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_key}"


def quoted_chunks(value: str) -> str:
    """A TXT value as DNS zone-file strings of at most 255 characters each."""
    parts = [value[i : i + TXT_CHUNK] for i in range(0, len(value), TXT_CHUNK)] or [""]
    return " ".join(f'"{part}"' for part in parts)


def zone_line(selector: str, domain: str, public_key: str) -> str:
    return f"{record_name(selector, domain)} IN TXT ( {quoted_chunks(record_value(public_key))} )"


def spf_suggestion(domain: str) -> dict[str, str]:
    value = "v=spf1 mx -all"
    return {
        "name": f"{domain}.",
        "type": "TXT",
        "value": value,
        "zone": f'{domain}. IN TXT "{value}"',
    }


def dmarc_suggestion(domain: str) -> dict[str, str]:
    value = f"v=DMARC1; p=quarantine; adkim=s; aspf=s; rua=mailto:postmaster@{domain}"
    name = f"_dmarc.{domain}."
    return {"name": name, "type": "TXT", "value": value, "zone": f'{name} IN TXT "{value}"'}
