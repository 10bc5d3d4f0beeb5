"""Signals the mail app sends: ``mail_changed`` after every committed mail change.

``deploy`` listens and turns these into converges of the nodes that serve the customer's
domains; mail itself never imports deploy (DESIGN.md's import rules). Receivers get
``customer_path`` (the customer whose mail data changed), ``domain_ids`` (the domains
affected, empty when the change concerns a customer-wide policy) and ``new_mailbox_ids``
(mailboxes the change created, so their addresses can be accepted ahead of a converge).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

mail_changed = Signal()


def announce(
    customer_path: str,
    domain_ids: Iterable[int] = (),
    *,
    kind: str = "",
    new_mailbox_ids: Iterable[int] = (),
) -> None:
    """Send ``mail_changed`` once the current transaction commits (at once outside one)."""
    ids = sorted({int(i) for i in domain_ids})
    created = sorted({int(i) for i in new_mailbox_ids})

    def send() -> None:
        mail_changed.send(
            sender="mail",
            customer_path=customer_path,
            domain_ids=ids,
            kind=kind,
            new_mailbox_ids=created,
        )

    transaction.on_commit(send)
