"""Sieve filters and auto-responders on delivery: Dovecot's LDA with Pigeonhole.

See :mod:`.service` for what is rendered and why; :mod:`.vacation` renders the
auto-responder. Postfix's side (the pipe(8) transport) is in
``deploy/services/postfix/delivery.py``, which asks :func:`postfix_glue`.
"""

from .service import (
    CONF,
    ROOT,
    TRANSPORT,
    LdaService,
    mailbox_dir,
    postfix_glue,
    vacation_addresses,
)

__all__ = [
    "CONF",
    "ROOT",
    "SERVICE",
    "TRANSPORT",
    "LdaService",
    "mailbox_dir",
    "postfix_glue",
    "vacation_addresses",
]

#: The instance the service registry (deploy.services.registry) picks up.
SERVICE = LdaService()
