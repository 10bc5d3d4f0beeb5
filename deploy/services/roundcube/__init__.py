"""Roundcube webmail on webmail nodes: PHP-FPM behind the node's own nginx."""

from .service import RoundcubeService

__all__ = ["RoundcubeService"]

#: The instance the service registry (deploy.services.registry) picks up.
SERVICE = RoundcubeService()
