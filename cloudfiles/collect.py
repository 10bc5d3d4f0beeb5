"""Cloud files used space: one ``occ`` command per cloud files node, stored in bulk.

Nextcloud's ``occ user:list --info`` gives each user's quota but not the space used
(``user:info`` does, one user at a time), so the collection runs the usage report of
Nextcloud's ``user_usage_report`` app, ``occ usage-report:generate``: one CSV line per
user, ``"uid","date",quota,used,files,shares,uploads,downloads`` (``used`` in bytes,
``-2`` when Nextcloud has no size yet; older releases print it as "1.1 MB"). Converge
enables the app (``app:enable`` fetches it from the app store). The answer is matched to
mailboxes by address inside the node's tree and written with one statement per node; a
node that cannot be read or answers something else keeps its last values.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections, connection, connections, transaction
from django.utils import timezone

from deploy.services.nextcloud import occ
from servers.choices import REACHABLE_STATUSES
from servers.models import Node

from .accounts import _like_prefix
from .state import ROLE

#: The report command (after the node's occ prefix): every user, CSV, bytes.
REPORT = ["usage-report:generate"]


class CollectError(Exception):
    """The node could not be measured; the message says why."""


@dataclass
class Outcome:
    node: Node
    used: dict[str, int] = field(default_factory=dict)
    error: str = ""


def parse_report(text: str) -> dict[str, int]:
    """{uid: used bytes} from ``occ usage-report:generate`` output; CollectError when any
    line is not a report line (nothing is taken from a partial or foreign answer)."""
    used: dict[str, int] = {}
    lines = [line for line in (text or "").splitlines() if line.strip()]
    for number, row in enumerate(csv.reader(lines), start=1):
        if len(row) < 4 or not row[0]:
            raise CollectError(f"usage report line {number}: not a report line: {row!r:.200}")
        value = row[3].strip()
        try:
            amount = int(value)
        except ValueError:
            amount = occ.quota_bytes(value) if value else -1
            if amount is None or amount < 0:
                raise CollectError(
                    f"usage report line {number}: used space {value!r:.40} is not a size"
                ) from None
        # -2 (FileInfo::SPACE_UNKNOWN): no size cached yet, i.e. nothing stored.
        used[row[0]] = max(amount, 0)
    return used


def cloud_nodes() -> list[Node]:
    nodes = Node.objects.filter(status__in=REACHABLE_STATUSES, host_key_alert="").exclude(
        pinned_host_keys=[]
    )
    return [n for n in nodes if ROLE in (n.roles or [])]


def _measure(node: Node) -> Outcome:
    from deploy.connector.base import ConnectorError
    from deploy.desired import settings_for
    from deploy.nodes import NodeUnavailable, session
    from deploy.services.base import PrepareFailed
    from deploy.services.nextcloud.service import occ_prefix

    try:
        prefix = occ_prefix(settings_for(node))
        with session(node) as conn:
            result = conn.run([*prefix, *REPORT], timeout=600)
        return outcome_of(node, result.ok, result.stdout, result.stderr)
    except (ConnectorError, NodeUnavailable, PrepareFailed, ValueError) as exc:
        return Outcome(node, error=f"{type(exc).__name__}: {exc}")
    finally:
        connections.close_all()  # the thread's own database connection


def outcome_of(node: Node, ok: bool, stdout: str, stderr: str) -> Outcome:
    """The node's answer to the report command, or why it is not one."""
    try:
        if not ok:
            raise CollectError((stderr or stdout).strip()[-1000:] or "failed")
        return Outcome(node, used=parse_report(stdout))
    except CollectError as exc:
        return Outcome(node, error=f"{type(exc).__name__}: {exc}")


def record(node: Node, used: Mapping[str, int]) -> int:
    """Store a node's measurement for the mailboxes of its tree; rows whose bytes changed.

    A mailbox of the tree missing from the report has no account there (deleted, never
    made): 0 bytes. Unchanged rows are not rewritten (``measured_at``: last change).
    """
    now = timezone.now()
    uids = list(used)
    values = [int(used[u]) for u in uids]
    prefix = _like_prefix(node.customer_path)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO cloudfiles_cloudaccount (mailbox_id, customer_id, customer_path, "
            "active, used_bytes, measured_at) "
            "SELECT m.id, m.customer_id, m.customer_path, false, v.used, %s "
            "FROM unnest(%s::text[], %s::bigint[]) AS v(email, used) "
            "JOIN mail_mailbox m ON m.email = v.email AND m.customer_path LIKE %s "
            "ON CONFLICT (mailbox_id) DO UPDATE SET used_bytes = EXCLUDED.used_bytes, "
            "measured_at = EXCLUDED.measured_at "
            "WHERE cloudfiles_cloudaccount.used_bytes IS DISTINCT FROM EXCLUDED.used_bytes",
            [now, uids, values, prefix],
        )
        changed = cursor.rowcount
        cursor.execute(
            "UPDATE cloudfiles_cloudaccount a SET used_bytes = 0, measured_at = %s "
            "FROM mail_mailbox m WHERE m.id = a.mailbox_id AND a.customer_path LIKE %s "
            "AND a.used_bytes <> 0 AND NOT (m.email = ANY(%s))",
            [now, prefix, uids],
        )
        changed += cursor.rowcount
    return changed


def sweep(nodes: list[Node] | None = None) -> dict[str, int | list[str]]:
    """Measure every reachable cloud files node (bounded concurrency) and store."""
    close_old_connections()
    nodes = cloud_nodes() if nodes is None else nodes
    workers = max(1, min(settings.UMS_METRICS_CONCURRENCY, len(nodes) or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(_measure, nodes))
    return store(outcomes)


def store(outcomes: list[Outcome]) -> dict[str, int | list[str]]:
    """Record the nodes that answered; a missed node's accounts keep their last values."""
    measured = changed = 0
    errors: list[str] = []
    for outcome in outcomes:
        if outcome.error:
            errors.append(f"{outcome.node.hostname}: {outcome.error}")
            continue
        measured += 1
        changed += record(outcome.node, outcome.used)
    return {"nodes": measured, "missed": len(errors), "changed": changed, "errors": errors}
