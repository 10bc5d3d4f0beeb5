"""After an IMAP node converged: its relaying SMTP nodes retry what it deferred.

A relaying SMTP node may accept mail for a new mailbox (the express step, or Postfix
going live alone) before the IMAP node holding the domain knows the mailbox. The IMAP
node's refusal is turned into a deferral (the ``ums-imap`` transport), and Postfix would
retry only after its backoff (minutes). Once the IMAP node has converged, the SMTP nodes
that relay to it re-queue just the deferred messages the IMAP node refused (``postqueue
-i``), so they are delivered at once. Nothing else in their queues is touched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from django.db.models import Q

from servers.models import Node

from .connector.base import ConnectorError
from .desired import mail_address
from .dirty import CONVERGE_STATUSES
from .nodes import session

#: Postfix queue ids: short (hex) or long (base 52 with a "z"-free alphabet).
_QUEUE_ID = re.compile(r"^[0-9A-Za-z]{6,20}$")
#: At most this many messages re-queued per SMTP node and converge.
MAX_MESSAGES = 1000

_REQUEUE_SCRIPT = 'for id; do postqueue -i "$id" || exit 1; done'


def relaying_smtp_nodes(imap_node: Node) -> list[Node]:
    """SMTP nodes (other than this one) whose customer tree overlaps the IMAP node's."""
    path = imap_node.customer_path
    ids = [part for part in path.split("/") if part]
    ancestors = ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]
    return list(
        Node.objects.filter(status__in=CONVERGE_STATUSES, roles__contains=["smtp"])
        .filter(Q(customer_path__in=ancestors) | Q(customer_path__startswith=path))
        .exclude(pk=imap_node.pk)
        .order_by("pk")
    )


def refused_by(queue_json: str, address: str) -> list[str]:
    """Ids of deferred messages a recipient of which the host at ``address`` refused.

    ``queue_json``: ``postqueue -j`` output (one JSON object per line).
    """
    marks = (f"host {address}[", f"[{address}]")
    found: list[str] = []
    for line in queue_json.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict) or message.get("queue_name") != "deferred":
            continue
        queue_id = str(message.get("queue_id", ""))
        if not _QUEUE_ID.match(queue_id):
            continue
        for recipient in message.get("recipients") or ():
            reason = str(recipient.get("delay_reason", "")) if isinstance(recipient, dict) else ""
            if any(mark in reason for mark in marks):
                found.append(queue_id)
                break
    return found[:MAX_MESSAGES]


def retry_deferred(imap_node: Node, log: Callable[[str], None]) -> int:
    """Re-queue, on every relaying SMTP node, the mail ``imap_node`` deferred; the count.

    Best effort: an unreachable SMTP node is logged and skipped (its own retry comes).
    """
    address = mail_address(imap_node.addresses, imap_node.ssh_address)
    total = 0
    for smtp in relaying_smtp_nodes(imap_node):
        try:
            with session(smtp) as conn:
                listing = conn.run(["postqueue", "-j"], timeout=120)
                if not listing.ok:
                    continue
                ids = refused_by(listing.stdout, address)
                if ids:
                    conn.run(["sh", "-c", _REQUEUE_SCRIPT, "sh", *ids], timeout=120).check()
        except ConnectorError as exc:
            log(f"{smtp.hostname}: deferred mail not re-queued ({exc})")
            continue
        if ids:
            log(f"{smtp.hostname}: re-queued {len(ids)} message(s) deferred by this node")
            total += len(ids)
    return total
