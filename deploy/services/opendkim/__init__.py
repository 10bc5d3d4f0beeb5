"""OpenDKIM on SMTP nodes: outbound DKIM signing and inbound DKIM verification."""

from .service import MILTER, OpenDkimService, milter_entry, signing_enabled

__all__ = ["MILTER", "OpenDkimService", "milter_entry", "signing_enabled"]

#: The instance the service registry (deploy.services.registry) picks up.
SERVICE = OpenDkimService()
