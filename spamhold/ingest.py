"""Ingestion: record what sits in each SMTP node's Postfix hold queue.

Per node, one SSH session: ``postqueue -j`` lists the queue; headers are read with
``postcat -hq`` for the ids not yet recorded only, many ids per remote command
(:func:`spamhold.nodeops.fetch_headers`). New messages are inserted once
(``bulk_create(ignore_conflicts=True)`` on the unique (node, queue id)), so two runs at
the same time or one after the other never duplicate a row. Rows still ``ONHOLD`` whose id
has left the hold queue (released or deleted on the node by hand, or expired by Postfix)
become ``GONE``. Each message belongs to the customer owning its recipient domain (looked
up by IDNA name among the node's customer tree's domains and domain aliases); without a
hosted recipient it stays with the node's customer, whose administrators see it.

A message with a release/delete request (pending, or given up) that left the queue is
settled from the node's marker file of that request: our command moved it (the request's
outcome) or it left by other means (``GONE``). A message still in the queue is never
``GONE``, whatever is pending for it.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections, connections
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext as _

from deploy.connector.base import ConnectorError
from deploy.nodes import session
from mail.models import Domain, DomainAlias
from servers.choices import REACHABLE_STATUSES, Role
from servers.models import Node
from tenants import permissions as perms
from tenants.models import Customer
from ums import jobs, scoping
from ums.actions import action, require_permission
from ums.models import Job

from . import nodeops, parsing, retention
from .models import HeldMessage, Status

logger = logging.getLogger(__name__)

# Rows per query when comparing the queue with the database.
DB_CHUNK = 5000


@dataclass
class IngestResult:
    node_id: int
    node_name: str
    in_queue: int = 0
    new: int = 0
    gone: int = 0
    error: str = ""
    skipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "nodeName": self.node_name,
            "inQueue": self.in_queue,
            "new": self.new,
            "gone": self.gone,
            "error": self.error,
            "skipped": self.skipped,
        }


def smtp_nodes() -> list[Node]:
    """Every SMTP node the controller talks to."""
    nodes = Node.objects.filter(status__in=REACHABLE_STATUSES, host_key_alert="").exclude(
        pinned_host_keys=[]
    )
    return [n for n in nodes if Role.SMTP in (n.roles or [])]


def _chunks(items: list, size: int = DB_CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _owners(node: Node, domains: set[str]) -> dict[str, tuple[int, str]]:
    """{recipient domain: (customer id, customer path)} for hosted domains; two queries."""
    if not domains:
        return {}
    scope = node.customer_path or "/"
    owners = {
        name: (customer_id, path)
        for name, customer_id, path in Domain.objects.filter(
            name__in=domains, customer_path__startswith=scope
        ).values_list("name", "customer_id", "customer_path")
    }
    for name, customer_id, path in DomainAlias.objects.filter(
        name__in=domains - set(owners), customer_path__startswith=scope
    ).values_list("name", "customer_id", "customer_path"):
        owners[name] = (customer_id, path)
    return owners


def _build_rows(
    node: Node, entries: list[nodeops.QueueEntry], headers: dict[str, str]
) -> list[HeldMessage]:
    recipient_domains = {parsing.address_domain(r) for e in entries for r in e.recipients}
    owners = _owners(node, recipient_domains - {""})
    node_path = node.customer_path or "/"
    now = timezone.now()
    prepared = []
    for entry in entries:
        text = headers.get(entry.queue_id)
        if text is None:
            continue  # left the queue between listing and reading
        summary = parsing.summarise_headers(text)
        recipients = [parsing.clean_text(r, 320) for r in entry.recipients][:1000]
        # The first recipient at a hosted domain decides the owner (one queue file can
        # carry recipients of several customers; it is held, and handled, once).
        owner, first = None, recipients[0] if recipients else ""
        for address in recipients:
            found = owners.get(parsing.address_domain(address))
            if found is not None:
                owner, first = found, address
                break
        received = (
            datetime.datetime.fromtimestamp(entry.arrival_time, tz=datetime.UTC)
            if entry.arrival_time > 0
            else now
        )
        sender = parsing.clean_text(entry.sender, 320)
        hold = summary.hold
        prepared.append(
            (
                owner[1] if owner else node_path,
                HeldMessage(
                    node=node,
                    node_name=node.hostname[:255],
                    queue_id=entry.queue_id,
                    customer_id=owner[0] if owner else None,
                    customer_path=owner[1] if owner else node_path,
                    received_at=received,
                    sender=sender,
                    sender_domain=parsing.address_domain(sender),
                    recipients=recipients,
                    recipient=first,
                    recipient_domain=parsing.address_domain(first),
                    subject=summary.subject,
                    size=max(entry.size, 0),
                    reason=hold.reason,
                    reason_detail=hold.detail,
                    spam_score=hold.score,
                    spam_rules=hold.rules,
                    virus_name=parsing.clean_text(hold.virus, 255),
                    attachment_name=parsing.clean_text(hold.attachment, 255),
                    status=Status.ONHOLD,
                    expires_at=received,  # set below from the owner's retention
                ),
            )
        )
    days = retention.days_for_paths({path for path, _row in prepared})
    rows = []
    for path, row in prepared:
        row.expires_at = retention.expiry(row.received_at, days[path])
        rows.append(row)
    return rows


def ingest_node(node: Node) -> IngestResult:
    """Bring the database in line with ``node``'s hold queue; safe to run at any time."""
    result = IngestResult(node_id=node.pk, node_name=node.hostname)
    with session(node) as conn:
        entries = nodeops.list_hold(conn)
        result.in_queue = len(entries)
        queue_ids = [e.queue_id for e in entries]
        known: set[str] = set()
        for chunk in _chunks(queue_ids):
            known.update(
                HeldMessage.objects.filter(node=node, queue_id__in=chunk).values_list(
                    "queue_id", flat=True
                )
            )
        new_entries = [e for e in entries if e.queue_id not in known]
        headers = nodeops.fetch_headers(conn, [e.queue_id for e in new_entries])
        # Requested messages that left the queue: our marker says whether our command
        # moved them (read after the listing, so "no marker" means "not us").
        from . import actions

        ours = {
            intent_id: nodeops.marked(conn, token)
            for intent_id, token in actions.absent_requested(node, set(queue_ids)).items()
        }
        if any(ours.values()):
            # Mail a dead attempt requeued may be waiting for pickup's next poll.
            nodeops.kick_pickup(conn)

    rows = _build_rows(node, new_entries, headers)
    result.new, result.gone = actions.record_ingest(
        actor=None,
        node=node,
        rows=rows,
        present=set(queue_ids),
        in_queue=len(entries),
        ours=ours,
    )
    return result


def _lock_key(node_id: int) -> str:
    return f"ums:lock:spamhold-ingest:{node_id}"


def ingest_locked(node: Node) -> IngestResult:
    """:func:`ingest_node` unless the same node is being ingested elsewhere right now."""
    key = _lock_key(node.pk)
    if not cache.add(key, 1, timeout=settings.UMS_SPAMHOLD_INGEST_LOCK_SECONDS):
        return IngestResult(node_id=node.pk, node_name=node.hostname, skipped=True)
    try:
        return ingest_node(node)
    except (ConnectorError, nodeops.QueueCommandFailed, nodeops.InvalidQueueId) as exc:
        detail = getattr(exc, "output", "")
        return IngestResult(
            node_id=node.pk,
            node_name=node.hostname,
            error=f"{type(exc).__name__}: {exc} {detail}".strip()[:2000],
        )
    finally:
        cache.delete(key)


def _one(node: Node) -> IngestResult:
    try:
        return ingest_locked(node)
    except Exception as exc:  # one broken node must not stop the sweep
        logger.exception("ingesting held mail from %s failed", node.hostname)
        return IngestResult(node_id=node.pk, node_name=node.hostname, error=str(exc)[:2000])
    finally:
        # Threads get their own database connections; close them when the thread ends.
        connections.close_all()


def sweep(
    nodes: list[Node] | None = None, *, concurrency: int | None = None, on_result: Any = None
) -> list[IngestResult]:
    """Ingest every SMTP node, at most ``concurrency`` at a time."""
    close_old_connections()
    if nodes is None:
        nodes = smtp_nodes()
    if not nodes:
        return []
    workers = max(1, min(concurrency or settings.UMS_SPAMHOLD_CONCURRENCY, len(nodes)))
    results = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for outcome in pool.map(_one, nodes):
            results.append(outcome)
            if on_result is not None:
                on_result(outcome, len(results), len(nodes))
    return results


# ------------------------------------------------------------------- on demand


def nodes_for(actor: Any) -> list[Node]:
    """SMTP nodes that can hold mail for ``actor``'s customers.

    A node serves the domains of its customer's subtree, so these are the nodes of the
    actor's own customer or above (the provider's), and those inside the subtree.
    """
    nodes = smtp_nodes()
    if actor is None:
        return nodes
    path = scoping.scope_path_of(actor) or ""
    return [
        n
        for n in nodes
        if n.customer_path
        and (path.startswith(n.customer_path) or n.customer_path.startswith(path))
    ]


@action
def refresh(*, actor: Any, node_ids: Iterable[int] | None = None) -> Job:
    """Start a job that ingests now (the "Refresh" button) instead of at the next tick."""
    require_permission(actor, perms.SPAMHOLD_VIEW)
    nodes = nodes_for(actor)
    if node_ids is not None:
        wanted = {int(i) for i in node_ids}
        nodes = [n for n in nodes if n.pk in wanted]
        if len(nodes) != len(wanted):
            raise Http404
    customer = None
    if actor is not None:
        customer = Customer.objects.filter(pk=actor.customer_id).first()
    return jobs.enqueue(
        "spamhold.refresh",
        actor=actor,
        title=_("Refresh held mail from %(count)d node(s)") % {"count": len(nodes)},
        customer=customer,
        params={"node_ids": [n.pk for n in nodes]},
        total=len(nodes),
    )
