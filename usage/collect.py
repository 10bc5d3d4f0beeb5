"""Used-space collection: one constant command per IMAP node, stored in bulk.

The node program (:mod:`.node_program`) answers with bytes and messages per Maildir; here
they are matched to mailboxes (by domain and local part), written to ``MailboxUsage`` and
``mail.Mailbox.used_bytes`` in one transaction per node, and the quota thresholds are
checked. Only reads on the node; a run killed midway leaves the older values, and a run
again simply measures again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, connections, transaction
from django.utils import timezone

from mail import actions as mail_actions
from mail.models import Mailbox
from servers.choices import REACHABLE_STATUSES
from servers.models import Node

from . import quota_warnings
from .node_program import PROGRAM


class CollectError(Exception):
    """The node could not be measured; the message says why."""


@dataclass
class Outcome:
    node: Node
    boxes: dict[str, list[int]] = field(default_factory=dict)
    error: str = ""


def _conf() -> dict[str, Any]:
    from deploy.desired import DEFAULT_SETTINGS

    return {**DEFAULT_SETTINGS, **getattr(settings, "UMS_CONVERGE", {})}


def run_program(conn: Any, python: str, args: Mapping[str, Any]) -> dict[str, list[int]]:
    """Run the node program over ``conn``; {"domain/local": [bytes, messages]}."""
    result = conn.run([python, "-c", PROGRAM], input=json.dumps(args).encode(), timeout=600)
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = {}
    if not result.ok or "boxes" not in answer:
        raise CollectError((result.stderr or result.stdout).strip()[-1000:] or "no answer")
    return {str(k): [int(v[0]), int(v[1])] for k, v in answer["boxes"].items()}


def imap_nodes() -> list[Node]:
    nodes = Node.objects.filter(status__in=REACHABLE_STATUSES, host_key_alert="").exclude(
        pinned_host_keys=[]
    )
    return [n for n in nodes if "imap" in (n.roles or [])]


def _measure(node: Node) -> Outcome:
    from deploy.connector.base import ConnectorError
    from deploy.desired import os_family
    from deploy.nodes import NodeUnavailable, session
    from deploy.services.probes import PYTHON

    try:
        python = PYTHON.get(os_family(node.os_id), PYTHON["debian"])
        with session(node) as conn:
            boxes = run_program(conn, python, {"root": _conf()["mail_root"], "domains": None})
        return Outcome(node, boxes=boxes)
    except (ConnectorError, NodeUnavailable, CollectError, ValueError) as exc:
        return Outcome(node, error=f"{type(exc).__name__}: {exc}")
    finally:
        connections.close_all()  # the thread's own database connection


def measurements_for(node: Node, boxes: Mapping[str, list[int]]) -> dict[int, tuple[int, int]]:
    """{mailbox id: (bytes, messages)} of the mailboxes this node holds.

    A domain placed on another node is skipped (a left-over copy is not the mailbox);
    a mailbox of a domain placed here with no Maildir yet holds nothing: 0 bytes.
    """
    from deploy.models import DomainPlacement

    placed_here = set(
        DomainPlacement.objects.filter(node=node).values_list("domain__name", flat=True)
    )
    placed_elsewhere = set(
        DomainPlacement.objects.exclude(node=node).values_list("domain__name", flat=True)
    )
    names = {key.split("/", 1)[0] for key in boxes} | placed_here
    found: dict[int, tuple[int, int]] = {}
    rows = Mailbox.objects.filter(domain__name__in=names).values_list(
        "pk", "domain__name", "local_part"
    )
    for pk, domain, local in rows.iterator(chunk_size=5000):
        if domain in placed_elsewhere:
            continue
        value = boxes.get(f"{domain}/{local}")
        if value is not None:
            found[pk] = (value[0], value[1])
        elif domain in placed_here:
            found[pk] = (0, 0)
    return found


def record(measurements: Mapping[int, tuple[int, int]]) -> int:
    """Store measurements (current values) and check the quota thresholds (against today's
    quotas, so a lowered quota warns too); mailboxes whose used bytes changed."""
    if not measurements:
        return 0
    now = timezone.now()
    ids = list(measurements)
    used = [max(int(measurements[pk][0]), 0) for pk in ids]
    counts = [max(int(measurements[pk][1]), 0) for pk in ids]
    with transaction.atomic():
        stored = mail_actions.record_used_space(dict(zip(ids, used, strict=True)))
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO usage_mailboxusage (mailbox_id, customer_id, customer_path, "
                "used_bytes, messages, measured_at, warned_percent) "
                "SELECT m.id, m.customer_id, m.customer_path, v.used, v.messages, %s, 0 "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS v(id, used, messages) "
                "JOIN mail_mailbox m ON m.id = v.id "
                "ON CONFLICT (mailbox_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, "
                "customer_path = EXCLUDED.customer_path, used_bytes = EXCLUDED.used_bytes, "
                "messages = EXCLUDED.messages, measured_at = EXCLUDED.measured_at "
                # Unchanged rows are not rewritten: measured_at is when the value last changed.
                "WHERE (usage_mailboxusage.used_bytes, usage_mailboxusage.messages, "
                "usage_mailboxusage.customer_id) IS DISTINCT FROM "
                "(EXCLUDED.used_bytes, EXCLUDED.messages, EXCLUDED.customer_id)",
                [now, ids, used, counts],
            )
        quota_warnings.evaluate(ids)
    return stored


def sweep(nodes: list[Node] | None = None) -> dict[str, int]:
    """Measure every reachable IMAP node (bounded concurrency), store, send due warnings."""
    close_old_connections()
    nodes = imap_nodes() if nodes is None else nodes
    workers = max(1, min(settings.UMS_METRICS_CONCURRENCY, len(nodes) or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(_measure, nodes))
    counts = {"nodes": 0, "missed": 0, "changed": 0, "mailed": 0}
    for outcome in outcomes:
        if outcome.error:
            counts["missed"] += 1
            continue
        counts["nodes"] += 1
        counts["changed"] += record(measurements_for(outcome.node, outcome.boxes))
    counts["mailed"] = quota_warnings.send_pending()
    return counts
