"""ClamAV service: clamd.conf on SMTP nodes where anti-virus is on."""

from .service import CLAMD_TCP, ClamAVService, antivirus_domains, antivirus_enabled, scan_endpoint

__all__ = ["CLAMD_TCP", "ClamAVService", "antivirus_domains", "antivirus_enabled", "scan_endpoint"]

#: The instance the service registry (deploy.services.registry) picks up.
SERVICE = ClamAVService()
