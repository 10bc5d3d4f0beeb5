"""The scheduled certificate renewal for load balancers (Celery beat).

Beat entry (``CELERY_BEAT_SCHEDULE`` in ``ums/settings.py``)::

    "renew-lb-certificates": {"task": "deploy.renew_lb_certificates", "schedule": 86400},

Running daily is what makes "renewed every 3 months" hold: certificates live 90 days
and are renewed once fewer than 30 are left, so a failing run has a month of retries.
The worker must import this module (``from deploy.services.nginx import tasks`` in
``deploy/tasks.py``): Celery's autodiscovery only looks at ``<app>/tasks.py``.

Settings (all optional): ``UMS_TLS_CERT_DIR`` (default ``VAR_DIR / "tls"``),
``UMS_LB_HOSTNAMES`` (``{cert name: [dns names]}`` to issue even before they are in the
store). Which names use ACME, and the ACME settings, are in :mod:`deploy.lb_certificates`,
which the task hands the work to as the job ``lb.renew_certificates`` (job log, alerts).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import shared_task
from django.conf import settings

from .certs import FileCertificateStore, certificates_setting

__all__ = [
    "cert_directory",
    "current_certificates",
    "renew_lb_certificates",
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


@shared_task(name="deploy.renew_lb_certificates", acks_late=True)
def renew_lb_certificates() -> list[str]:
    """Queue the renewal job; the names it renewed when it ran here and now (eager)."""
    from deploy.lb_certificates import start_renewal

    job = start_renewal()
    if job is None:
        return []
    job.refresh_from_db()
    return list((job.result or {}).get("renewed", [])) if job.result else []
