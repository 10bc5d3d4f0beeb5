"""What the mail app announces: an outbox row in the change's transaction, and
``mail_changed`` after commit.

``deploy`` turns both into converges of the nodes that serve the customer's domains; mail
itself never imports deploy (DESIGN.md's import rules). The outbox row (topic
``mail.changed``, see :mod:`ums.outbox`) is the durable intent: it commits or rolls back
with the change, so a process dying right after the commit loses nothing (the reconciler
consumes it). The signal is the fast path and carries ``outbox_id``, ``customer_path``
(the customer whose mail data changed), ``domain_ids`` (the domains affected, empty when
the change concerns a customer-wide policy), ``kind`` and ``new_mailbox_ids`` (mailboxes
the change created, so their addresses can be accepted ahead of a converge).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

from ums import outbox

mail_changed = Signal()
TOPIC = "mail.changed"


def announce(
    customer_path: str,
    domain_ids: Iterable[int] = (),
    *,
    kind: str = "",
    new_mailbox_ids: Iterable[int] = (),
) -> None:
    """Write the intent now (inside the caller's transaction) and send ``mail_changed``
    once the transaction commits (at once outside one)."""
    ids = sorted({int(i) for i in domain_ids})
    created = sorted({int(i) for i in new_mailbox_ids})
    payload = {"domain_ids": ids, "kind": kind, "new_mailbox_ids": created}
    row = outbox.write(TOPIC, customer_path, payload)

    def send() -> None:
        mail_changed.send(
            sender="mail",
            customer_path=customer_path,
            domain_ids=ids,
            kind=kind,
            new_mailbox_ids=created,
            outbox_id=row.pk,
        )

    transaction.on_commit(send)
