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
from concurrent.futures import ThreadPoolExecutor

from django.db.models import Q
from django.utils.translation import gettext_noop

from servers.models import Node
from ums.joblog import log_entry

from .connector.base import ConnectorError
from .connector.ssh import SSHConnector
from .desired import mail_address
from .dirty import CONVERGE_STATUSES
from .nodes import connector_for

#: Postfix queue ids: short (hex) or long (base 52 with a "z"-free alphabet).
_QUEUE_ID = re.compile(r"^[0-9A-Za-z]{6,20}$")
#: At most this many messages re-queued per SMTP node and converge.
MAX_MESSAGES = 1000
#: SMTP nodes asked at the same time.
MAX_PARALLEL = 8

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


def _requeue(conn: SSHConnector, address: str) -> int:
    """On one SMTP node: re-queue what the host at ``address`` deferred; the count."""
    try:
        listing = conn.run(["postqueue", "-j"], timeout=120)
        if not listing.ok:
            return 0
        ids = refused_by(listing.stdout, address)
        if ids:
            conn.run(["sh", "-c", _REQUEUE_SCRIPT, "sh", *ids], timeout=120).check()
        return len(ids)
    finally:
        conn.close()


def retry_deferred(imap_node: Node, log: Callable[[str], None]) -> int:
    """Re-queue, on every relaying SMTP node, the mail ``imap_node`` deferred; the count.

    Best effort and quick: the SMTP nodes are asked at once, each connection tried once,
    and an unreachable node is logged and skipped (its own retry comes later).
    """
    address = mail_address(imap_node.addresses, imap_node.ssh_address)
    connectors: dict[str, SSHConnector] = {}
    for smtp in relaying_smtp_nodes(imap_node):
        try:
            conn = connector_for(smtp)  # reads the controller key: in this thread
        except ConnectorError as exc:
            log(
                log_entry(
                    gettext_noop("%(host)s: deferred mail not re-queued (%(error)s)"),
                    host=smtp.hostname,
                    error=str(exc),
                )
            )
            continue
        conn.retries = 0
        connectors[smtp.hostname] = conn
    if not connectors:
        return 0
    total = 0
    with ThreadPoolExecutor(max_workers=min(len(connectors), MAX_PARALLEL)) as pool:
        futures = {host: pool.submit(_requeue, conn, address) for host, conn in connectors.items()}
        for host, future in futures.items():
            try:
                count = future.result()
            except ConnectorError as exc:
                log(
                    log_entry(
                        gettext_noop("%(host)s: deferred mail not re-queued (%(error)s)"),
                        host=host,
                        error=str(exc),
                    )
                )
                continue
            if count:
                log(
                    log_entry(
                        gettext_noop(
                            "%(host)s: re-queued %(count)s message(s) deferred by this node"
                        ),
                        host=host,
                        count=count,
                    )
                )
                total += count
    return total
