"""SpamAssassin service: local.cf, per-domain thresholds and the Postfix glue data."""

from .service import (
    DEFAULT_THRESHOLDS,
    SPAMD_ADDRESS,
    SPAMD_PORT,
    SpamAssassinService,
    SpamThresholds,
    classify,
    node_defaults,
    postfix_glue,
    thresholds_by_domain,
    thresholds_for,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "SPAMD_ADDRESS",
    "SPAMD_PORT",
    "SpamAssassinService",
    "SpamThresholds",
    "classify",
    "node_defaults",
    "postfix_glue",
    "thresholds_by_domain",
    "thresholds_for",
]

#: The instance the service registry (deploy.services.registry) picks up.
SERVICE = SpamAssassinService()
