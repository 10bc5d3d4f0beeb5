"""The scheduled certificate renewal for load balancers (Celery beat).

Beat entry (``CELERY_BEAT_SCHEDULE`` in ``ums/settings.py``)::

    "renew-lb-certificates": {"task": "deploy.renew_lb_certificates", "schedule": 86400},

Running daily is what makes "renewed every 3 months" hold: certificates live 90 days
and are renewed once fewer than 30 are left, so a failing run has a month of retries.
The worker must import this module (``from deploy.services.nginx import tasks`` in
``deploy/tasks.py``): Celery's autodiscovery only looks at ``<app>/tasks.py``.

Settings (all optional): ``UMS_TLS_CERT_DIR`` (default ``VAR_DIR / "tls"``),
``UMS_TLS_ISSUER`` (``"local-ca"``, the default, or ``"acme"``, which is not implemented
in this build and fails loudly), ``UMS_LB_HOSTNAMES`` (``{cert name: [dns names]}`` to
issue even before they are in the store).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import shared_task
from django.conf import settings

from .certs import (
    AcmeIssuer,
    FileCertificateStore,
    Issuer,
    LocalCAIssuer,
    certificates_setting,
    renew_certificates,
)

__all__ = [
    "cert_directory",
    "current_certificates",
    "default_issuer",
    "renew_lb_certificates",
    "renew_now",
]

#: Called with the renewed names when anything was renewed, so the load balancers get
#: converged with the new files. ``deploy.receivers`` sets it (the converge side owns
#: "mark dirty"; this package stays free of database and job code).
on_renewed: Callable[[list[str]], Any] | None = None


def cert_directory() -> Path:
    return Path(getattr(settings, "UMS_TLS_CERT_DIR", None) or Path(settings.VAR_DIR) / "tls")


def current_certificates() -> dict[str, dict[str, str]]:
    """The store's certificates as the nginx service renders them (``tls_certificates``)."""
    return certificates_setting(FileCertificateStore(cert_directory()))


def default_issuer(directory: Path) -> Issuer:
    """The configured issuer: the local CA (kept in ``directory/ca``) unless ACME."""
    if getattr(settings, "UMS_TLS_ISSUER", "local-ca") == "acme":
        return AcmeIssuer(
            getattr(settings, "UMS_ACME_DIRECTORY", ""),
            getattr(settings, "UMS_ACME_EMAIL", ""),
            "",
        )
    return LocalCAIssuer.load_or_create(directory / "ca")


def renew_now() -> list[str]:
    """One renewal pass over the controller's certificate store; the renewed names."""
    directory = cert_directory()
    store = FileCertificateStore(directory)
    wanted = getattr(settings, "UMS_LB_HOSTNAMES", None) or {}
    renewed = renew_certificates(store, default_issuer(directory), wanted)
    if renewed and on_renewed is not None:
        on_renewed(renewed)
    return renewed


@shared_task(name="deploy.renew_lb_certificates", acks_late=True)
def renew_lb_certificates() -> list[str]:
    return renew_now()
