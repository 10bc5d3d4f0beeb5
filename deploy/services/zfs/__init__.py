"""ZFS mail store service: a dataset per domain, planned from facts, never destroyed."""

from .service import (
    DEDUP_MIN_MEMORY_BYTES,
    MailStoreError,
    MailStoreFacts,
    ZfsService,
    dedup_allowed,
    describe_plan,
    orphans,
)

__all__ = [
    "DEDUP_MIN_MEMORY_BYTES",
    "MailStoreError",
    "MailStoreFacts",
    "ZfsService",
    "dedup_allowed",
    "describe_plan",
    "orphans",
]

#: The instance the service registry (deploy.services.registry) picks up.
SERVICE = ZfsService()
