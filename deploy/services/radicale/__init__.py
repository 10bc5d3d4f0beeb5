"""Radicale on cloud-files nodes: CalDAV/CardDAV per mailbox and the global address books."""

from .service import GAL_PREFIX, PORT, ROOT, RadicaleService, gal_key

__all__ = ["GAL_PREFIX", "PORT", "ROOT", "SERVICE", "RadicaleService", "gal_key"]

#: The instance the service registry (deploy.services.registry) picks up.
SERVICE = RadicaleService()
