"""Which nodes must converge, and one converge per node at a time: durable, in PostgreSQL.

Per node a :class:`~deploy.models.NodeConvergeState` row holds the *desired generation*
(bumped by :func:`bump` whenever something the node serves changes) and the *applied
generation* (the generation the last successful converge read at its start). A node is
dirty while desired > applied; nothing but a successful converge clears that (and a failed
converge makes even a clean node dirty: it may have changed the node halfway), so a dead
worker, a failed converge or a lost message leaves the node dirty and the ``converge``
reconciler (:mod:`deploy.reconcile`) starts it again: with backoff after failures (5 s,
10 s, 20 s ... ``UMS_CONVERGE_RETRY_MAX_SECONDS``), a node alert after
:data:`ALERT_AFTER` failures in a row, and on forever at the longest interval, so a node
that comes back heals by itself.

One converge per node: a converge takes the node's *lease* (:func:`acquire`) for
``UMS_CONVERGE_LEASE_SECONDS``; its job's heartbeat renews it, so a dead worker's lease
lapses within that time (not an hour). Every acquisition increments ``lease_token``, the
fencing token: the outcome is written ``WHERE lease_token = mine``, so a converge that was
given up for dead cannot overwrite a newer one's; the node enforces the same token on its
files (every install checks and records it, :func:`deploy.converge.install_staged`).
Changes arriving meanwhile coalesce: a job that finds the lease taken ends at once, and
the holder, whose generation was read at its start, queues another run if desired moved
past it.

Jobs: :func:`mark` bumps and queues a converge job unless one is queued and not started
(``queued_job_id``). The express step's list of new mailboxes stays in the shared cache:
it only makes a new address live sooner, the converge is what makes it right.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from servers.choices import REACHABLE_STATUSES, NodeStatus
from servers.models import Node
from ums import jobs
from ums.models import Job

from .models import NodeConvergeState

logger = logging.getLogger(__name__)

PREFIX = "ums:converge"
# Nodes that render from mail data: webmail (allow list, domains, address books) and cloud
# files (one Nextcloud account and one CalDAV/CardDAV user per mailbox, the global address
# books) follow mail changes too.
MAIL_ROLES = ("smtp", "imap", "webmail", "cloudfiles")
#: Nodes that converge after changes (an offline node too: it converges when it is back).
CONVERGE_STATUSES = (NodeStatus.APPROVED, NodeStatus.ACTIVE, NodeStatus.DEGRADED)
DIRTY_STATUSES = REACHABLE_STATUSES
#: Failed converges in a row before the node shows an alert.
ALERT_AFTER = 5
ALERT_KIND = "converge_failed"
#: How long the express step's list of new mailboxes is kept.
EXPRESS_TIMEOUT = 300


def _key(kind: str, node_id: int) -> str:
    # The database name keeps two databases sharing one Redis (dev, tests) apart.
    return f"{PREFIX}:{settings.DATABASES['default']['NAME']}:{kind}:{node_id}"


def forget(node_ids: Iterable[int]) -> None:
    """Drop the cached express lists of these nodes (a node id reused by a new database)."""
    cache.delete_many([_key("new-mailboxes", i) for i in node_ids])


def enabled() -> bool:
    return bool(getattr(settings, "UMS_AUTO_CONVERGE", True))


def lease_length() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.UMS_CONVERGE_LEASE_SECONDS)


def retry_delay(failures: int) -> datetime.timedelta:
    """5 s after the first failure, doubling, at most ``UMS_CONVERGE_RETRY_MAX_SECONDS``."""
    cap = settings.UMS_CONVERGE_RETRY_MAX_SECONDS
    return datetime.timedelta(seconds=min(5 * 2 ** min(max(failures - 1, 0), 20), cap))


# --------------------------------------------------------------------------- intents


def bump(node_ids: Iterable[int], *, reason: str = "") -> list[int]:
    """Raise the desired generation of these nodes (rows created on first use); call in
    the transaction that decided they must converge. Returns the ids bumped."""
    ids = sorted({int(i) for i in node_ids})
    if not ids:
        return []
    with connection.cursor() as cursor:
        # One statement, no read-modify-write: concurrent bumps each count. A new change
        # is due at once, whatever backoff an earlier failure set.
        cursor.execute(
            """
            INSERT INTO deploy_nodeconvergestate AS s (node_id, desired_generation,
                applied_generation, reason, lease_owner, lease_token, running_generation, failures,
                next_attempt_at, last_error)
            SELECT id, 1, 0, %s, '', 0, 0, 0, %s, '' FROM servers_node WHERE id = ANY(%s)
            ON CONFLICT (node_id) DO UPDATE SET
                desired_generation = s.desired_generation + 1,
                reason = EXCLUDED.reason,
                next_attempt_at = LEAST(s.next_attempt_at, EXCLUDED.next_attempt_at)
            RETURNING node_id
            """,
            [reason[:200], timezone.now(), ids],
        )
        return [row[0] for row in cursor.fetchall()]


def mark(node_ids: Iterable[int], *, reason: str = "") -> list[int]:
    """Bump these nodes and queue a converge for each that has none queued yet.

    Returns the ids a new job was queued for.
    """
    with transaction.atomic():
        bumped = bump(node_ids, reason=reason)
        return ensure_queued(bumped, reason=reason)


def ensure_queued(node_ids: Iterable[int], *, reason: str = "") -> list[int]:
    """Queue a converge job per node unless one is queued and not started yet."""
    queued: list[int] = []
    for node in Node.objects.filter(pk__in=list(node_ids)).order_by("pk"):
        with transaction.atomic():
            state = NodeConvergeState.objects.select_for_update().filter(node=node).first()
            if state is None:
                continue
            if (
                state.queued_job_id
                and Job.objects.filter(pk=state.queued_job_id, status=Job.PENDING).exists()
            ):
                continue  # coalesced into the queued job
            job = enqueue(node, reason=reason)
            NodeConvergeState.objects.filter(node=node).update(queued_job_id=job.pk)
            queued.append(node.pk)
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


def is_dirty(node_id: int) -> bool:
    return NodeConvergeState.objects.filter(
        node_id=node_id, desired_generation__gt=F("applied_generation")
    ).exists()


def state_of(node_id: int) -> NodeConvergeState | None:
    return NodeConvergeState.objects.filter(node_id=node_id).first()


def due() -> list[NodeConvergeState]:
    """Dirty nodes whose next attempt is due (the reconciler's one indexed query)."""
    return list(due_queryset().select_related("node")[:200])


def due_queryset() -> QuerySet[NodeConvergeState]:
    # Ordered like the partial index ``converge_dirty``, so the planner walks that (tiny)
    # index even though it cannot estimate how few rows are dirty. Every dirty row has a
    # next_attempt_at: bump, failed, succeeded and the reconciler always set one.
    return (
        NodeConvergeState.objects.filter(desired_generation__gt=F("applied_generation"))
        .filter(next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
    )


# --------------------------------------------------------------------------- the lease


@dataclass
class Lease:
    """A node's converge lease as held by one converge."""

    node_id: int
    owner: str
    token: int
    generation: int

    def renew(self) -> bool:
        """Extend the lease (the job's heartbeat calls this); False if it was lost or given
        back. The heartbeat runs in its own thread: a beat that lands after
        :func:`succeeded`, :func:`failed` or :func:`release` freed the lease (same token,
        no owner) must not take it again, or an ownerless lease nobody works under would
        make every converge of the node end at once as "coalesced" until it lapsed."""
        return bool(
            NodeConvergeState.objects.filter(
                node_id=self.node_id,
                lease_token=self.token,
                lease_owner=self.owner,
                lease_expires_at__isnull=False,
            ).update(lease_expires_at=timezone.now() + lease_length())
        )

    @property
    def held(self) -> bool:
        return NodeConvergeState.objects.filter(
            node_id=self.node_id, lease_token=self.token, lease_expires_at__gt=timezone.now()
        ).exists()


def acquire(node_id: int, owner: str, *, steal: int | None = None) -> Lease | None:
    """Take the node's lease unless someone else holds it unexpired.

    ``owner`` names the holder (``job:<id>``): a job that runs again after its worker
    died takes its own lease over at once instead of waiting for it to lapse (the job's
    own claim already guarantees one live run); ``steal`` takes over the lease with that
    token (its holder is known dead, see :func:`holder_is_dead`). A lease without an owner
    was given back (every holder names itself), so it is free whatever its expiry says.
    Reads the desired
    generation in the same statement: that is what this converge makes true.
    """
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO deploy_nodeconvergestate (node_id, desired_generation,
                applied_generation, reason,
                lease_owner, lease_token, running_generation, failures, last_error)
            SELECT id, 0, 0, '', '', 0, 0, 0, '' FROM servers_node WHERE id = %s
            ON CONFLICT (node_id) DO NOTHING
            """,
            [node_id],
        )
        cursor.execute(
            """
            UPDATE deploy_nodeconvergestate SET lease_token = lease_token + 1, lease_owner = %s,
                lease_expires_at = %s, running_generation = desired_generation
            WHERE node_id = %s
              AND (lease_expires_at IS NULL OR lease_expires_at <= %s OR lease_owner = %s
                   OR lease_owner = '' OR lease_token = %s)
            RETURNING lease_token, desired_generation
            """,
            [owner, now + lease_length(), node_id, now, owner, -1 if steal is None else steal],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return Lease(node_id=node_id, owner=owner, token=row[0], generation=row[1])


def lease_owner(node_id: int) -> str | None:
    """Who holds the node's unexpired lease (``job:<id>``), if anyone: named in the log of
    a converge that coalesced into it, so an administrator can follow the work."""
    return (
        NodeConvergeState.objects.filter(node_id=node_id, lease_expires_at__gt=timezone.now())
        .values_list("lease_owner", flat=True)
        .first()
    )


def holder_is_dead(node_id: int) -> int | None:
    """The token of the node's lease if its holder is a job that is provably not running
    any more (finished, given back, or its process on this host gone), else None.

    Lets a converge requested right after a worker restart start at once instead of
    being coalesced into a converge that died with the old worker.
    """
    state = (
        NodeConvergeState.objects.filter(node_id=node_id, lease_expires_at__gt=timezone.now())
        .values("lease_owner", "lease_token")
        .first()
    )
    if state is None or not state["lease_owner"].startswith("job:"):
        return None
    job_id = state["lease_owner"].removeprefix("job:")
    job = Job.objects.filter(pk=int(job_id) if job_id.isdigit() else 0).first()
    if job is None or job.status != Job.RUNNING or (job.owner and jobs.owner_is_gone(job.owner)):
        return state["lease_token"]
    return None


def succeeded(lease: Lease) -> bool:
    """The converge applied its generation: record it (fenced) and free the lease.

    False when the lease was taken over meanwhile: a newer converge owns the outcome.
    """
    from servers import actions as server_actions

    now = timezone.now()
    done = NodeConvergeState.objects.filter(node_id=lease.node_id, lease_token=lease.token).update(
        applied_generation=_greatest("applied_generation", lease.generation),
        failures=0,
        # Due at once should a change have arrived meanwhile (then it is still dirty).
        next_attempt_at=now,
        last_error="",
        last_applied_at=now,
        lease_expires_at=None,
        lease_owner="",
    )
    if done:
        node = Node.objects.filter(pk=lease.node_id).first()
        if node is not None:
            server_actions.resolve_alerts(node, ALERT_KIND)
    return bool(done)


def failed(lease: Lease, reason: str) -> int:
    """The converge failed: the node stays dirty, the next attempt waits (backoff), and
    after :data:`ALERT_AFTER` failures in a row the node shows an alert with the reason.
    Returns the failures in a row (0 if the lease was lost).

    A node that was clean (a converge requested by hand, or after a settings change that
    bumps nothing) becomes dirty: a converge that failed midway may have left new files
    live and not reloaded, or rolled back, so the node is no longer known to serve its
    applied generation, and the reconciler converges it again until one succeeds."""
    with transaction.atomic():
        state = (
            NodeConvergeState.objects.select_for_update()
            .filter(node_id=lease.node_id, lease_token=lease.token)
            .first()
        )
        if state is None:
            return 0
        failures = state.failures + 1
        NodeConvergeState.objects.filter(pk=state.pk).update(
            failures=failures,
            desired_generation=_greatest("desired_generation", F("applied_generation") + 1),
            next_attempt_at=timezone.now() + retry_delay(failures),
            last_error=reason[:4000],
            lease_expires_at=None,
            lease_owner="",
        )
    if failures >= ALERT_AFTER:
        _raise_alert(lease.node_id, reason, failures)
    return failures


def catch_up(node_id: int, seen: int) -> bool:
    """The node's fence holds ``seen``, a token above any this database issued for it
    (every token a node sees was issued here first, and tokens only grow): move the
    node's token sequence past it so the next converge's installs are not refused.
    Whoever holds the lease loses it (its token no longer matches). True if moved."""
    return bool(
        NodeConvergeState.objects.filter(node_id=node_id, lease_token__lt=seen).update(
            lease_token=seen, lease_expires_at=None, lease_owner=""
        )
    )


def release(lease: Lease) -> None:
    """Free the lease if this converge still holds it (dry runs, coalesced ends)."""
    NodeConvergeState.objects.filter(node_id=lease.node_id, lease_token=lease.token).update(
        lease_expires_at=None, lease_owner=""
    )


def _greatest(field: str, value: Any) -> Any:
    from django.db.models.functions import Greatest

    return Greatest(F(field), value)


def _raise_alert(node_id: int, reason: str, failures: int) -> None:
    from django.utils.translation import gettext as _

    from servers import actions as server_actions

    node = Node.objects.filter(pk=node_id).first()
    if node is None:
        return
    first_line = (reason.strip().splitlines() or ["?"])[0][:500]
    message = _(
        "The configuration could not be applied to %(host)s: %(reason)s (failed %(n)s "
        "times in a row; the controller keeps retrying by itself)."
    ) % {"host": node.hostname, "reason": first_line, "n": failures}
    alert = server_actions.raise_alert(node, ALERT_KIND, message)
    if alert.message != message:
        type(alert).objects.filter(pk=alert.pk).update(message=message)


# --------------------------------------------------------------------------- routing


def nodes_serving(customer_path: str) -> list[int]:
    """Mail nodes whose customer tree contains ``customer_path`` (owner or an ancestor)."""
    ids = [part for part in customer_path.split("/") if part]
    ancestors = ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]
    # Every mail change runs this: written once as SQL, the statement the queryset built
    # (``roles__contains=[role]`` for any mail role, Node's ordering), without its compile.
    with connection.cursor() as cursor:
        cursor.execute(_SERVING_SQL, [_DIRTY_STATUS_VALUES, ancestors, *_ROLE_PARAMS])
        return [row[0] for row in cursor.fetchall()]


_ROLE_PARAMS = [json.dumps([role]) for role in MAIL_ROLES]
_DIRTY_STATUS_VALUES = [str(status) for status in DIRTY_STATUSES]
_SERVING_SQL = (
    f"SELECT id FROM {Node._meta.db_table} "  # noqa: S608
    "WHERE status = ANY(%s) AND customer_path = ANY(%s) AND ("
    + " OR ".join("roles @> %s::jsonb" for _role in MAIL_ROLES)
    + ") ORDER BY hostname"
)


def on_mail_changed(customer_path: str, *, kind: str = "", new_mailbox_ids: Any = ()) -> None:
    """A mail change (outbox row being consumed, or a bare signal): bump the nodes serving
    the customer now and queue their converges once this transaction commits."""
    if not enabled():
        return
    nodes = bump(nodes_serving(customer_path), reason=f"mail changed ({kind or 'update'})")
    if not nodes:
        return

    def queue() -> None:
        if new_mailbox_ids:
            for node_id in nodes:
                remember_new_mailboxes(node_id, new_mailbox_ids)
        ensure_queued(nodes, reason=f"mail changed ({kind or 'update'})")

    transaction.on_commit(queue)


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
    cache.set(key, value, timeout=EXPRESS_TIMEOUT)


def take_new_mailboxes(node_id: int) -> list[int]:
    """The mailboxes noted for the node, forgotten as they are read."""
    key = _key("new-mailboxes", node_id)
    waiting = cache.get(key)
    cache.delete(key)
    if not isinstance(waiting, list):
        return []
    return [int(i) for i in waiting]
