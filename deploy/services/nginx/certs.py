"""TLS certificates for the load balancer: issue, store and renew before expiry.

The product sheet asks for certificates renewed every 3 months. Issuance is pluggable
(:class:`Issuer`):

* :class:`LocalCAIssuer` signs with a local certificate authority (``cryptography``). It
  is what the tests use and the on-premise default: clients must trust the local CA.
* ACME issuance for public names (Let's Encrypt or any RFC 8555 CA) is
  :class:`deploy.services.nginx.acme.AcmeIssuer`, driven per name by
  :mod:`deploy.lb_certificates`.

Certificates live in a :class:`CertificateStore` on the controller (a directory by
default); :func:`certificates_setting` turns the store into the
``DesiredState.settings["tls_certificates"]`` mapping the nginx service renders from, and
:func:`renew_certificates` is the renewal pass the scheduled task runs.

Pure Python, no Django.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CERT_LIFETIME",
    "RENEW_BEFORE",
    "CertificateBundle",
    "CertificateStore",
    "FileCertificateStore",
    "Issuer",
    "IssuerUnavailable",
    "LocalCAIssuer",
    "certificates_setting",
    "needs_renewal",
    "renew_certificates",
]

#: Lifetime of an issued certificate: the sheet's "every 3 months", like ACME CAs.
CERT_LIFETIME = dt.timedelta(days=90)
#: Renew when less than this is left, so a failed run has weeks of retries before expiry.
RENEW_BEFORE = dt.timedelta(days=30)

_NAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def valid_cert_name(name: str) -> bool:
    """True for a hostname-like name safe to use as a file name and in nginx config."""
    return bool(_NAME_RE.match(name)) and ".." not in name


class IssuerUnavailable(RuntimeError):
    """The issuer cannot issue (not configured)."""


@dataclass(frozen=True)
class CertificateBundle:
    """A certificate (PEM, leaf first then intermediates) and its private key (PEM)."""

    cert_pem: str
    key_pem: str

    def _leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode())

    @property
    def not_after(self) -> dt.datetime:
        return self._leaf().not_valid_after_utc

    @property
    def names(self) -> tuple[str, ...]:
        """The DNS names in the leaf's subjectAltName, in order."""
        try:
            san = self._leaf().extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return ()
        return tuple(san.value.get_values_for_type(x509.DNSName))

    @property
    def serial(self) -> int:
        return self._leaf().serial_number

    @property
    def key_matches(self) -> bool:
        """True when the private key belongs to the leaf certificate."""
        key = serialization.load_pem_private_key(self.key_pem.encode(), password=None)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        return key.public_key().public_bytes(*spki) == self._leaf().public_key().public_bytes(*spki)


class Issuer(Protocol):
    """Something that can issue a certificate for a list of DNS names."""

    def issue(
        self, names: Sequence[str], *, now: dt.datetime | None = None
    ) -> CertificateBundle: ...


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 ECDSA: accepted by every TLS 1.0-1.3 client nginx serves, and cheap to make.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class LocalCAIssuer:
    """Issues certificates signed by a local CA (tests; on-premise default)."""

    def __init__(
        self, ca_cert_pem: str, ca_key_pem: str, *, lifetime: dt.timedelta = CERT_LIFETIME
    ) -> None:
        self.ca_cert_pem = ca_cert_pem
        self._ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
        key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the local CA key must be an EC key")
        self._ca_key = key
        self.lifetime = lifetime

    @classmethod
    def create(
        cls,
        common_name: str = "UMS local CA",
        *,
        now: dt.datetime | None = None,
        lifetime: dt.timedelta = CERT_LIFETIME,
    ) -> LocalCAIssuer:
        """A brand new CA valid for ten years."""
        now = now or _now()
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        return cls(pem, _key_pem(key), lifetime=lifetime)

    @classmethod
    def load_or_create(
        cls, directory: Path, *, lifetime: dt.timedelta = CERT_LIFETIME
    ) -> LocalCAIssuer:
        """The CA kept in ``directory`` (``ca.crt``/``ca.key``), created on first use."""
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        if cert_path.exists() and key_path.exists():
            return cls(cert_path.read_text(), key_path.read_text(), lifetime=lifetime)
        issuer = cls.create(lifetime=lifetime)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_atomic(key_path, issuer.ca_key_pem.encode(), 0o600)
        _write_atomic(cert_path, issuer.ca_cert_pem.encode(), 0o644)
        return issuer

    @property
    def ca_key_pem(self) -> str:
        return _key_pem(self._ca_key)

    def issue(self, names: Sequence[str], *, now: dt.datetime | None = None) -> CertificateBundle:
        """A fresh key and a server certificate for ``names`` valid for ``lifetime``."""
        if not names or not all(valid_cert_name(n) for n in names):
            raise ValueError(f"invalid certificate names: {list(names)!r}")
        now = now or _now()
        key = _new_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + self.lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        return CertificateBundle(
            cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key)
        )


class CertificateStore(Protocol):
    """Where the controller keeps the load balancer's certificates, by name."""

    def get(self, name: str) -> CertificateBundle | None: ...

    def put(self, name: str, bundle: CertificateBundle) -> None: ...

    def names(self) -> list[str]: ...


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # Temp file in the same directory, then rename: readers never see half a key.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{secrets.token_hex(4)}")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class FileCertificateStore:
    """Certificates as ``<name>.crt`` / ``<name>.key`` (0600) files in one directory."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def _paths(self, name: str) -> tuple[Path, Path]:
        if not valid_cert_name(name):
            raise ValueError(f"invalid certificate name {name!r}")
        return self.directory / f"{name}.crt", self.directory / f"{name}.key"

    def get(self, name: str) -> CertificateBundle | None:
        cert, key = self._paths(name)
        if not (cert.exists() and key.exists()):
            return None
        return CertificateBundle(cert.read_text(), key.read_text())

    def put(self, name: str, bundle: CertificateBundle) -> None:
        cert, key = self._paths(name)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Two renames cannot be one atomic step: a crash between them leaves a mismatched
        # pair. nginx -t refuses that on the staged tree (live files stay intact) and
        # needs_renewal() treats a mismatched pair as due, so the next run repairs it.
        _write_atomic(key, bundle.key_pem.encode(), 0o600)
        _write_atomic(cert, bundle.cert_pem.encode(), 0o644)

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(
            p.stem
            for p in self.directory.glob("*.crt")
            if p.stem != "ca" and valid_cert_name(p.stem)
        )


def needs_renewal(
    bundle: CertificateBundle | None,
    names: Sequence[str] = (),
    *,
    now: dt.datetime | None = None,
    renew_before: dt.timedelta = RENEW_BEFORE,
) -> bool:
    """True when there is no certificate, it expires within ``renew_before``, or it does
    not cover every name in ``names``."""
    if bundle is None:
        return True
    now = now or _now()
    if bundle.not_after - now < renew_before or not bundle.key_matches:
        return True
    return not set(names) <= set(bundle.names)


def renew_certificates(
    store: CertificateStore,
    issuer: Issuer,
    wanted: Mapping[str, Sequence[str]] | None = None,
    *,
    now: dt.datetime | None = None,
    renew_before: dt.timedelta = RENEW_BEFORE,
) -> list[str]:
    """Issue what is missing or near expiry; return the names of the renewed certificates.

    ``wanted`` maps certificate name -> DNS names; certificates already in the store and
    not in ``wanted`` are renewed for the names they already cover. Idempotent: a second
    run right after the first renews nothing.
    """
    now = now or _now()
    plan: dict[str, tuple[str, ...]] = {}
    for name in store.names():
        bundle = store.get(name)
        plan[name] = bundle.names if bundle and bundle.names else (name,)
    for name, names in (wanted or {}).items():
        plan[name] = tuple(names) or (name,)
    renewed: list[str] = []
    for name, names in sorted(plan.items()):
        if needs_renewal(store.get(name), names, now=now, renew_before=renew_before):
            store.put(name, issuer.issue(list(names), now=now))
            renewed.append(name)
    return renewed


def certificates_setting(store: CertificateStore) -> dict[str, dict[str, str]]:
    """``{name: {"cert": pem, "key": pem}}`` for ``DesiredState.settings["tls_certificates"]``."""
    result: dict[str, dict[str, str]] = {}
    for name in store.names():
        bundle = store.get(name)
        if bundle is not None:
            result[name] = {"cert": bundle.cert_pem, "key": bundle.key_pem}
    return result
