"""Which mailboxes have an enabled Nextcloud account: recorded after each converge.

Where the truth of ``files_users`` lives: the converge's own result. The accounts a
cloud files node gets are decided when its desired state is built (effective "files"
flag, mailbox enabled, and the subtree's ``max_cloud_gb`` applied in address order by
:func:`cloudfiles.usage.admitted`); the limit part is sequential across nested limits
and cannot be one SQL aggregate, and the converge is what makes Nextcloud hold it. So
after a converge of the node succeeded, its accounts are written here in one set-based
statement (an unnest upsert plus one update for the rest of the node's tree); the daily
snapshot then counts ``active`` rows with one GROUP BY, whatever the number of mailboxes.
A converge that failed records nothing: the figures keep what the node last had.
"""

from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

from deploy.services.base import DesiredState
from deploy.services.nextcloud.data import UID_RE
from deploy.services.nextcloud.service import nextcloud_data
from servers.models import Node

from .state import ROLE


def active_uids(state: DesiredState) -> list[str]:
    """The addresses whose account the converge left existing and enabled."""
    data = nextcloud_data(state)
    if data is None:
        return []
    return sorted(a.uid for a in data.accounts if a.files and a.enabled and UID_RE.match(a.uid))


def record_converged(node: Node, state: DesiredState) -> int:
    """Record the node's accounts after a successful converge; rows now active."""
    if ROLE not in (node.roles or ()) or nextcloud_data(state) is None:
        return 0
    uids = active_uids(state)
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO cloudfiles_cloudaccount (mailbox_id, customer_id, customer_path, "
            "active, used_bytes, converged_at) "
            "SELECT m.id, m.customer_id, m.customer_path, true, 0, %s FROM mail_mailbox m "
            "WHERE m.email = ANY(%s) AND m.customer_path LIKE %s "
            "ON CONFLICT (mailbox_id) DO UPDATE SET active = true, "
            "customer_id = EXCLUDED.customer_id, customer_path = EXCLUDED.customer_path, "
            "converged_at = EXCLUDED.converged_at",
            [now, uids, _like_prefix(node.customer_path)],
        )
        active = cursor.rowcount
        # Everything else in the node's tree has no enabled account now (disabled,
        # refused by the limit, never made); a mailbox moved keeps its row's customer.
        cursor.execute(
            "UPDATE cloudfiles_cloudaccount a SET active = false, converged_at = %s, "
            "customer_id = m.customer_id, customer_path = m.customer_path "
            "FROM mail_mailbox m WHERE m.id = a.mailbox_id AND a.customer_path LIKE %s "
            "AND a.active AND NOT (m.email = ANY(%s))",
            [now, _like_prefix(node.customer_path), uids],
        )
    return active


def _like_prefix(path: str) -> str:
    """A LIKE pattern for a materialised path prefix (paths are digits and slashes)."""
    return path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
