"""nginx load balancer service: configuration, certificates and their renewal."""

from .certs import (
    CertificateBundle,
    FileCertificateStore,
    LocalCAIssuer,
    certificates_setting,
    needs_renewal,
    renew_certificates,
)
from .service import WEB_ROLES, MissingCertificate, NginxService, tls_protocols

__all__ = [
    "WEB_ROLES",
    "CertificateBundle",
    "FileCertificateStore",
    "LocalCAIssuer",
    "MissingCertificate",
    "NginxService",
    "certificates_setting",
    "needs_renewal",
    "renew_certificates",
    "tls_protocols",
]

#: The instance the service registry (deploy.services.registry) picks up.
SERVICE = NginxService()
