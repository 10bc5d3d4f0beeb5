"""Mark nodes dirty after committed changes; one converge per node at a time, coalesced.

Keys in the shared cache (Redis in production, so every web process and worker agrees):

* ``dirty:<id>``: something changed since the node's last converge read the database;
* ``queued:<id>``: a converge job is queued and has not started yet, so further changes
  need no second job (they coalesce into it);
* ``lock:<id>``: a converge is running on the node.

A converge clears ``dirty`` *before* it reads the database, so a change committed while
it runs sets the flag again; when it finishes it queues a follow-up run if the flag is
set. A job that finds the lock taken leaves the flag set and ends: the running converge
picks the change up afterwards. No change is lost and no two converges of one node
overlap.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q

from servers.choices import NodeStatus
from servers.models import Node
from ums import jobs
from ums.models import Job

PREFIX = "ums:converge"
#: Longest a converge may hold the lock (a crashed worker releases it by expiry).
LOCK_TIMEOUT = 3600
MAIL_ROLES = ("smtp", "imap")
CONVERGE_STATUSES = (NodeStatus.APPROVED, NodeStatus.ACTIVE, NodeStatus.DEGRADED)


#: A queued job that never started (lost message) stops blocking new ones after this.
QUEUED_TIMEOUT = 300


def _key(kind: str, node_id: int) -> str:
    # The database name keeps two databases sharing one Redis (dev, tests) apart.
    return f"{PREFIX}:{settings.DATABASES['default']['NAME']}:{kind}:{node_id}"


def forget(node_ids: Iterable[int]) -> None:
    """Drop every flag of these nodes (a node row was recreated with a reused id)."""
    kinds = ("dirty", "queued", "lock", "new-mailboxes")
    cache.delete_many([_key(k, i) for i in node_ids for k in kinds])


def enabled() -> bool:
    return bool(getattr(settings, "UMS_AUTO_CONVERGE", True))


def mark(node_ids: Iterable[int], *, reason: str = "") -> list[int]:
    """Mark nodes dirty and queue a converge for each that has none queued yet.

    Call after commit (receivers do). Returns the ids a new job was queued for.
    """
    queued: list[int] = []
    for node_id in node_ids:
        cache.set(_key("dirty", node_id), reason or "changed", timeout=None)
        if cache.add(_key("queued", node_id), 1, timeout=QUEUED_TIMEOUT):
            queued.append(node_id)
    for node in Node.objects.filter(pk__in=queued):
        with transaction.atomic():
            enqueue(node, reason=reason)
    return queued


def enqueue(node: Node, *, dry_run: bool = False, actor: Any = None, reason: str = "") -> Job:
    from django.utils.translation import gettext as _

    title = (_("Dry run: %(host)s") if dry_run else _("Converge %(host)s")) % {
        "host": node.hostname
    }
    return jobs.enqueue(
        "node.converge",
        actor=actor,
        title=title,
        customer_path=node.customer_path,
        params={"node_id": node.pk, "dry_run": dry_run, "reason": reason[:200]},
        target=node,
    )


def mark_only(node_id: int) -> None:
    """Set the dirty flag without queueing (a running converge will follow up)."""
    cache.set(_key("dirty", node_id), "changed", timeout=None)


def started(node_id: int) -> None:
    """A queued job began: later changes need a new job."""
    cache.delete(_key("queued", node_id))


def acquire(node_id: int) -> bool:
    return bool(cache.add(_key("lock", node_id), 1, timeout=LOCK_TIMEOUT))


def release(node_id: int) -> None:
    cache.delete(_key("lock", node_id))


def clear(node_id: int) -> None:
    cache.delete(_key("dirty", node_id))


def is_dirty(node_id: int) -> bool:
    return cache.get(_key("dirty", node_id)) is not None


def nodes_serving(customer_path: str) -> list[int]:
    """Mail nodes whose customer tree contains ``customer_path`` (owner or an ancestor)."""
    ids = [part for part in customer_path.split("/") if part]
    ancestors = ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]
    role_filter = Q()
    for role in MAIL_ROLES:
        role_filter |= Q(roles__contains=[role])
    return list(
        Node.objects.filter(status__in=CONVERGE_STATUSES, customer_path__in=ancestors)
        .filter(role_filter)
        .values_list("pk", flat=True)
    )


def on_mail_changed(sender: Any, customer_path: str, **kwargs: Any) -> None:
    """``mail.signals.mail_changed`` receiver: converge the nodes serving the customer."""
    if not enabled():
        return
    nodes = nodes_serving(customer_path)
    if nodes:
        new_mailboxes = kwargs.get("new_mailbox_ids") or ()
        if new_mailboxes:
            for node_id in nodes:
                remember_new_mailboxes(node_id, new_mailboxes)
        mark(nodes, reason=f"mail changed ({kwargs.get('kind') or 'update'})")


#: Beyond this many waiting new mailboxes a node just converges (the express step is
#: for the few an administrator creates by hand, not for an import).
EXPRESS_LIMIT = 500


def remember_new_mailboxes(node_id: int, mailbox_ids: Iterable[int]) -> None:
    """Note mailboxes created since the node's last converge began (see
    :mod:`deploy.express`). Read-modify-write: two creations at the same instant may
    lose one id, which then simply waits for the converge itself."""
    key = _key("new-mailboxes", node_id)
    current = cache.get(key)
    if current == "too-many":
        return
    waiting = set(current or ()) | {int(i) for i in mailbox_ids}
    value = "too-many" if len(waiting) > EXPRESS_LIMIT else sorted(waiting)
    cache.set(key, value, timeout=QUEUED_TIMEOUT)


def take_new_mailboxes(node_id: int) -> list[int]:
    """The mailboxes noted for the node, forgotten as they are read."""
    key = _key("new-mailboxes", node_id)
    waiting = cache.get(key)
    cache.delete(key)
    if not isinstance(waiting, list):
        return []
    return [int(i) for i in waiting]
