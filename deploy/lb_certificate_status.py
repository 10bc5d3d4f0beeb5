"""What the operator sees of the load balancer certificates: every name served, who issues
it, what is installed now (issuer, expiry, days left) and the last ACME error.

Read from the controller's certificate store and database only: no node is asked.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from django.conf import settings

from .certificate_models import ISSUER_ACME, ISSUER_LOCAL_CA, LbCertificate
from .lb_certificates import acme_directory, challenge_type
from .services.nginx import tasks as nginx_tasks
from .services.nginx.certs import FileCertificateStore


@dataclass(frozen=True)
class CertificateStatus:
    name: str
    issuer: str
    names: tuple[str, ...]
    installed_by: str  # the CA that signed what is stored now (its subject's CN)
    not_after: dt.datetime | None
    days_left: int | None
    last_error: str
    last_attempt_at: dt.datetime | None
    last_issued_at: dt.datetime | None
    failures: int
    order_in_flight: bool


def _signer(cert_pem: str) -> str:
    leaf = x509.load_pem_x509_certificate(cert_pem.encode())
    names = leaf.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else leaf.issuer.rfc4514_string()


def overview(now: dt.datetime | None = None) -> list[CertificateStatus]:
    now = now or dt.datetime.now(dt.UTC)
    store = FileCertificateStore(Path(nginx_tasks.cert_directory()))
    rows = {row.name: row for row in LbCertificate.objects.all()}
    names = set(store.names()) | set(rows) | set(getattr(settings, "UMS_LB_HOSTNAMES", {}) or {})
    result = []
    for name in sorted(names):
        row = rows.get(name)
        bundle = store.get(name)
        not_after = bundle.not_after if bundle else None
        result.append(
            CertificateStatus(
                name=name,
                issuer=row.issuer if row else ISSUER_LOCAL_CA,
                names=bundle.names if bundle else (name,),
                installed_by=_signer(bundle.cert_pem) if bundle else "",
                not_after=not_after,
                days_left=(not_after - now).days if not_after else None,
                last_error=row.last_error if row else "",
                last_attempt_at=row.last_attempt_at if row else None,
                last_issued_at=row.last_issued_at if row else None,
                failures=row.failures if row else 0,
                order_in_flight=bool(row and row.order_url),
            )
        )
    return result


def acme_settings() -> dict[str, str | bool]:
    """How ACME is set up (environment), for the page's header; no secret."""
    return {
        "enabled": bool(acme_directory()),
        "directory": acme_directory(),
        "challenge": challenge_type(),
        "dns_zone": getattr(settings, "UMS_ACME_DNS_ZONE", ""),
    }


__all__ = ["ISSUER_ACME", "CertificateStatus", "acme_settings", "overview"]
