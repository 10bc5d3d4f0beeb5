"""OpenDMARC on SMTP nodes: SPF and DMARC verdicts on inbound mail."""

from .service import MILTER, OpenDmarcService, checks_enabled, milter_entry

__all__ = ["MILTER", "OpenDmarcService", "checks_enabled", "milter_entry"]

#: The instance the service registry (deploy.services.registry) picks up.
SERVICE = OpenDmarcService()
