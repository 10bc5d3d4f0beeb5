"""Every state change of held mail: release, delete, bulk outcomes, expiry, retention, ingest.

One outcome per message. A release or delete first *claims* the messages in the database
with one conditional UPDATE (``status = 'ONHOLD'`` -> the outcome, with who and when),
committed before any node is touched, so of two administrators acting on the same message
exactly one wins and the other is told who handled it. Only the winner runs the node
commands, batched per node: one SSH session, one ``postsuper`` for all its ids.

When the node command fails (node unreachable, Postfix refused), the claim is rolled back
(status ``ONHOLD`` again, ``node_error`` set) and the id is reported as failed, so it can
be retried. Retrying is always safe: the node's hold queue decides. ``postsuper`` acts
only on ids still in the hold queue, so a command that did run before the connection
dropped is not repeated: the retry finds the id gone from the hold queue and the row
becomes ``GONE``. Nothing is lost (a message leaves the hold queue only by a command that
succeeded) and nothing is delivered twice (``postsuper -H`` moves a message out of hold once).

Release-and-allow and delete-and-block also change the recipient domain's sender lists
through :mod:`mail.actions`, so that change is audited and converged like any other.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from deploy.connector.base import ConnectorError
from deploy.nodes import describe_error, session
from mail import actions as mail_actions
from mail import policy as mail_policy
from mail import validators as mail_validators
from mail.models import Domain, DomainAlias
from servers.models import Node
from tenants import permissions as perms
from tenants.models import Customer
from ums import auditing, jobs, scoping
from ums.actions import action, require_in_scope, require_permission
from ums.models import Job

from . import nodeops, retention
from .models import HeldMessage, HoldRetention, Outcome, Status
from .outcomes import OutcomeReport

#: Messages claimed per transaction and per node command.
CHUNK = 500

TARGET_STATUS = {
    Outcome.RELEASE: Status.RELEASED,
    Outcome.RELEASE_ALLOW: Status.RELEASED,
    Outcome.DELETE: Status.DELETED,
    Outcome.DELETE_BLOCK: Status.DELETED,
    Outcome.EXPIRE: Status.EXPIRED,
}
PERMISSION = {
    Outcome.RELEASE: perms.SPAMHOLD_RELEASE,
    Outcome.RELEASE_ALLOW: perms.SPAMHOLD_RELEASE,
    Outcome.DELETE: perms.SPAMHOLD_DELETE,
    Outcome.DELETE_BLOCK: perms.SPAMHOLD_DELETE,
    Outcome.EXPIRE: perms.SPAMHOLD_DELETE,
}
# Outcomes an administrator may ask for (expiry is the system's).
USER_OUTCOMES = (Outcome.RELEASE, Outcome.RELEASE_ALLOW, Outcome.DELETE, Outcome.DELETE_BLOCK)
# These also change a sender list, which is mail policy.
POLICY_OUTCOMES = (Outcome.RELEASE_ALLOW, Outcome.DELETE_BLOCK)


def _actor_name(actor: Any) -> str:
    return "system" if actor is None else (getattr(actor, "audit_name", "") or str(actor))[:255]


def _clean_ids(ids: Iterable[Any]) -> list[int]:
    """Distinct integer ids in the order given; anything else is a validation error."""
    if isinstance(ids, str | bytes):
        raise ValidationError({"ids": _("Enter a list of message ids.")})
    out: dict[int, None] = {}
    for value in ids:
        if isinstance(value, bool):
            raise ValidationError({"ids": _("Enter a list of message ids.")})
        try:
            out[int(value)] = None
        except (TypeError, ValueError) as exc:
            raise ValidationError({"ids": _("Enter a list of message ids.")}) from exc
    return list(out)


def _check_outcome(actor: Any, outcome: str, *, user: bool = True) -> None:
    allowed = USER_OUTCOMES if user else tuple(TARGET_STATUS)
    if outcome not in allowed:
        raise ValidationError({"outcome": _("Unknown outcome “%(value)s”.") % {"value": outcome}})
    require_permission(actor, PERMISSION[outcome])
    if outcome in POLICY_OUTCOMES:
        # Allow- and block-listing a sender is a mail policy change.
        require_permission(actor, perms.MAIL_MANAGE)


# ---------------------------------------------------------------------- public API


def release(*, actor: Any, ids: Iterable[int], allow_sender: bool = False) -> OutcomeReport:
    """Release held messages for delivery (and allow-list their senders if asked)."""
    outcome = Outcome.RELEASE_ALLOW if allow_sender else Outcome.RELEASE
    return apply_outcome(actor=actor, outcome=outcome, ids=ids)


def delete(*, actor: Any, ids: Iterable[int], block_sender: bool = False) -> OutcomeReport:
    """Delete held messages from their nodes (and block their senders if asked)."""
    outcome = Outcome.DELETE_BLOCK if block_sender else Outcome.DELETE
    return apply_outcome(actor=actor, outcome=outcome, ids=ids)


def apply_outcome(*, actor: Any, outcome: str, ids: Iterable[int]) -> OutcomeReport:
    """Claim, run on the nodes, settle; in chunks of :data:`CHUNK` messages.

    Must run outside a transaction of the caller's: each claim commits before the node
    commands, so concurrent callers see it at once.
    """
    _check_outcome(actor, outcome, user=actor is not None)
    report = OutcomeReport()
    wanted = _clean_ids(ids)
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        claimed, stamp = _claim(actor=actor, outcome=outcome, ids=chunk, report=report)
        if claimed:
            _run_on_nodes(actor, outcome, claimed, stamp, report)
    return report


# ---------------------------------------------------------------------- claim


def _already_entry(row: dict[str, Any]) -> dict[str, Any]:
    handled = row["handled_at"]
    return {
        "id": row["pk"],
        "status": row["status"],
        "outcome": row["outcome"],
        "handledBy": row["handled_by_name"],
        "handledAt": handled.isoformat() if handled else None,
    }


def _conditional_claim(
    ids: list[int], outcome: str, stamp: datetime.datetime, actor: Any
) -> list[int]:
    """Move the rows still ``ONHOLD`` to the outcome; returns the ids this caller won.

    The rows are locked in id order (no deadlock between two bulk claims); a concurrent
    claim of the same row waits for ours to commit, then PostgreSQL re-checks ``status``
    on the new row version and leaves it out. The UPDATE repeats the condition.
    """
    won = list(
        HeldMessage.objects.select_for_update(of=("self",))
        .filter(pk__in=ids, status=Status.ONHOLD)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if won:
        HeldMessage.objects.filter(pk__in=won, status=Status.ONHOLD).update(
            status=TARGET_STATUS[outcome],
            outcome=outcome,
            handled_at=stamp,
            handled_by=actor if actor is not None else None,
            handled_by_name=_actor_name(actor),
            node_error="",
        )
    return won


@action
def _claim(
    *, actor: Any, outcome: str, ids: list[int], report: OutcomeReport
) -> tuple[list[HeldMessage], datetime.datetime]:
    visible_qs = HeldMessage.objects.filter(pk__in=ids)
    if actor is not None:
        visible_qs = scoping.scope_queryset(visible_qs, actor)
    visible = set(visible_qs.values_list("pk", flat=True))
    report.not_found += [i for i in ids if i not in visible]
    if not visible:
        return [], timezone.now()
    stamp = timezone.now()
    won = set(_conditional_claim(sorted(visible), outcome, stamp, actor))
    lost = [i for i in ids if i in visible and i not in won]
    if lost:
        rows = HeldMessage.objects.filter(pk__in=lost).values(
            "pk", "status", "outcome", "handled_by_name", "handled_at"
        )
        by_id = {row["pk"]: row for row in rows}
        report.already += [_already_entry(by_id[i]) for i in lost if i in by_id]
    claimed = list(HeldMessage.objects.filter(pk__in=won).select_related("node"))
    _audit(f"spamhold.{outcome}", claimed, extra={"outcome": outcome})
    return claimed, stamp


def _audit(verb: str, rows: list[HeldMessage], extra: dict[str, Any] | None = None) -> None:
    """One audit record per customer and call, listing the messages (a bulk action on
    10,000 messages writes a handful of records, not 10,000)."""
    by_path: dict[str, list[HeldMessage]] = defaultdict(list)
    for row in rows:
        by_path[row.customer_path].append(row)
    for path, items in by_path.items():
        single = items[0] if len(items) == 1 else None
        auditing.record(
            verb,
            object_type=HeldMessage._meta.label_lower,
            object_id=single.pk if single else None,
            object_repr=str(single)
            if single
            else _("%(count)d held messages") % {"count": len(items)},
            customer_path=path,
            customer=items[0].customer if single else None,
            extra={
                **(extra or {}),
                "messages": [
                    {"id": r.pk, "queueId": r.queue_id, "node": r.node_name, "sender": r.sender}
                    for r in items
                ],
            },
        )


# ---------------------------------------------------------------------- node work


def _run_on_nodes(
    actor: Any,
    outcome: str,
    claimed: list[HeldMessage],
    stamp: datetime.datetime,
    report: OutcomeReport,
) -> None:
    by_node: dict[int | None, list[HeldMessage]] = defaultdict(list)
    for row in claimed:
        by_node[row.node_id].append(row)
    done: list[HeldMessage] = []
    gone: list[HeldMessage] = []
    failed: dict[int, str] = {}
    for node_id, rows in by_node.items():
        node = rows[0].node
        if node_id is None or node is None:
            failed.update({r.pk: _("The node of this message no longer exists.") for r in rows})
            continue
        by_queue_id = {r.queue_id: r for r in rows}
        try:
            with session(node) as conn:
                if outcome in (Outcome.RELEASE, Outcome.RELEASE_ALLOW):
                    change = nodeops.release(conn, list(by_queue_id))
                else:
                    change = nodeops.delete(conn, list(by_queue_id))
        except ConnectorError as exc:
            error = _("Node %(node)s: %(error)s") % {
                "node": node.hostname,
                "error": describe_error(exc),
            }
            failed.update({r.pk: error for r in rows})
            continue
        except (nodeops.QueueCommandFailed, nodeops.InvalidQueueId) as exc:
            error = _("Node %(node)s: %(error)s") % {
                "node": node.hostname,
                "error": f"{exc} {getattr(exc, 'output', '')}".strip()[:1000],
            }
            failed.update({r.pk: error for r in rows})
            continue
        done += [by_queue_id[q] for q in change.done]
        gone += [by_queue_id[q] for q in change.absent]
        for queue_id, error in change.failed.items():
            failed[by_queue_id[queue_id].pk] = _("Node %(node)s: %(error)s") % {
                "node": node.hostname,
                "error": f"{error}\n{change.output}".strip()[:1000],
            }
    _settle(actor=actor, outcome=outcome, stamp=stamp, gone=gone, failed=failed)
    report.done += [r.pk for r in done]
    report.already += [
        {
            "id": r.pk,
            "status": Status.GONE,
            "outcome": "",
            "handledBy": "",
            "handledAt": None,
        }
        for r in gone
    ]
    report.failed += [{"id": pk, "error": error} for pk, error in failed.items()]
    if outcome in POLICY_OUTCOMES and done:
        _update_sender_lists(actor, outcome, done, report)


@action
def _settle(
    *,
    actor: Any,
    outcome: str,
    stamp: datetime.datetime,
    gone: list[HeldMessage],
    failed: dict[int, str],
) -> None:
    """Undo this caller's claims that did not happen on the node.

    Conditional on the claim being ours (status and timestamp), so nothing another caller
    did since is overwritten.
    """
    mine = Q(status=TARGET_STATUS[outcome], outcome=outcome, handled_at=stamp)
    unclaim = {"outcome": "", "handled_at": None, "handled_by": None, "handled_by_name": ""}
    if gone:
        HeldMessage.objects.filter(mine, pk__in=[r.pk for r in gone]).update(
            status=Status.GONE, **unclaim
        )
        _audit("spamhold.gone", gone, extra={"outcome": outcome})
    by_error: dict[str, list[int]] = defaultdict(list)
    for pk, error in failed.items():
        by_error[error].append(pk)
    for error, pks in by_error.items():
        HeldMessage.objects.filter(mine, pk__in=pks).update(
            status=Status.ONHOLD, node_error=error[:2000], **unclaim
        )
    if failed:
        rows = list(HeldMessage.objects.filter(pk__in=list(failed)))
        _audit(f"spamhold.{outcome}_failed", rows, extra={"outcome": outcome})


def _hosted_domain(name: str) -> Domain | None:
    domain = Domain.objects.filter(name=name).select_related("customer").first()
    if domain is None:
        alias = DomainAlias.objects.filter(name=name).select_related("domain__customer").first()
        domain = alias.domain if alias else None
    return domain


def _update_sender_lists(
    actor: Any, outcome: str, done: list[HeldMessage], report: OutcomeReport
) -> None:
    """Add each sender to its recipient domain's allow (or block) list, one policy change
    per domain, through mail.actions (audited, converged)."""
    add_to, remove_from = (
        ("sender_allow", "sender_block")
        if outcome == Outcome.RELEASE_ALLOW
        else ("sender_block", "sender_allow")
    )
    by_domain: dict[str, list[HeldMessage]] = defaultdict(list)
    for row in done:
        if not row.sender:
            report.warnings.append(
                {"id": row.pk, "warning": _("The message has no sender to list.")}
            )
            continue
        by_domain[row.recipient_domain].append(row)
    for domain_name, rows in by_domain.items():
        domain = _hosted_domain(domain_name) if domain_name else None
        if domain is None:
            for row in rows:
                report.warnings.append(
                    {"id": row.pk, "warning": _("The recipient domain is not hosted here.")}
                )
            continue
        try:
            entries = [mail_validators.normalise_sender_entry(r.sender) for r in rows]
            effective = mail_policy.effective_filtering(customer=domain.customer, domain=domain)
            current = list(effective[add_to]["value"] or [])
            other = list(effective[remove_from]["value"] or [])
            changes: dict[str, Any] = {}
            new = current + [e for e in dict.fromkeys(entries) if e not in current]
            if new != current:
                changes[add_to] = new
            kept = [e for e in other if e not in entries]
            if kept != other:
                changes[remove_from] = kept
            if changes:
                mail_actions.update_domain_policy(actor=actor, domain=domain, **changes)
        except (ValidationError, PermissionDenied) as exc:
            message = "; ".join(getattr(exc, "messages", None) or [str(exc)])
            for row in rows:
                report.warnings.append({"id": row.pk, "warning": message[:500]})


# ---------------------------------------------------------------------- bulk


@action
def start_bulk(
    *,
    actor: Any,
    outcome: str,
    ids: list[int] | None = None,
    filters: dict | None = None,
) -> Job:
    """A job applying ``outcome`` to ``ids`` or to everything matching ``filters``.

    With filters, the set is what matched when the job started (ids up to the highest
    one at that moment), so mail arriving meanwhile is not swept up.
    """
    _check_outcome(actor, outcome)
    if (ids is None) == (filters is None):
        raise ValidationError(_("Give either message ids or filters."))
    params: dict[str, Any] = {"outcome": outcome}
    if ids is not None:
        params["ids"] = _clean_ids(ids)
        total = len(params["ids"])
    else:
        if not isinstance(filters, dict):
            raise ValidationError({"filters": _("Enter filters as an object.")})
        params["filters"] = filters
        params["max_id"] = HeldMessage.objects.order_by("-pk").values_list("pk", flat=True).first()
        total = 0
    customer = None
    if actor is not None:
        customer = Customer.objects.filter(pk=actor.customer_id).first()
    label = dict(Outcome.choices)[outcome]
    return jobs.enqueue(
        "spamhold.bulk",
        actor=actor,
        title=_("%(outcome)s held messages") % {"outcome": label},
        customer=customer,
        params=params,
        total=total,
    )


# ---------------------------------------------------------------------- expiry


def expire_due(*, now: datetime.datetime | None = None, limit: int = 10_000) -> dict[str, int]:
    """Delete held messages past their expiry from their nodes and mark them EXPIRED."""
    now = now or timezone.now()
    due = list(
        HeldMessage.objects.filter(status=Status.ONHOLD, expires_at__lte=now)
        .order_by("expires_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    report = apply_outcome(actor=None, outcome=Outcome.EXPIRE, ids=due)
    return report.counts()


# ---------------------------------------------------------------------- retention


@action
def set_retention(*, actor: Any, customer: Customer, days: int | None) -> HoldRetention | None:
    """Set how many days ``customer``'s held mail is kept (None: inherit from above).

    Messages on hold now that take their retention from this level get their expiry
    recomputed from when they were received.
    """
    require_permission(actor, perms.SPAMHOLD_DELETE)
    require_in_scope(customer, actor)
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    row = HoldRetention.objects.filter(pk=customer.pk).first()
    before = {"days": row.days} if row else {}
    if days is None:
        if row is not None:
            row.delete()
        row = None
    else:
        if isinstance(days, bool) or not isinstance(days, int):
            raise ValidationError({"days": _("Enter a whole number of days.")})
        if not retention.MIN_DAYS <= days <= retention.MAX_DAYS:
            raise ValidationError(
                {
                    "days": _("Enter a number of days from %(min)d to %(max)d.")
                    % {"min": retention.MIN_DAYS, "max": retention.MAX_DAYS}
                }
            )
        row = row or HoldRetention(customer=customer)
        row.customer_path = customer.path
        row.days = days
        row.save()
    effective_days, _source = retention.effective(customer.path)
    # Descendants with their own setting keep it; everyone else below follows this level.
    overrides = HoldRetention.objects.filter(customer_path__startswith=customer.path).exclude(
        pk=customer.pk
    )
    affected = HeldMessage.objects.filter(
        status=Status.ONHOLD, customer_path__startswith=customer.path
    )
    for path in overrides.values_list("customer_path", flat=True):
        affected = affected.exclude(customer_path__startswith=path)
    updated = affected.update(expires_at=F("received_at") + datetime.timedelta(days=effective_days))
    after = {"days": row.days} if row else {}
    auditing.record(
        "spamhold.retention.set" if row else "spamhold.retention.reset",
        object_type=HoldRetention._meta.label_lower,
        object_id=customer.pk,
        object_repr=str(customer),
        customer=customer,
        before=before,
        after=after,
        extra={"effectiveDays": effective_days, "messagesUpdated": updated},
    )
    return row


# ---------------------------------------------------------------------- ingestion


@action
def record_ingest(
    *, actor: Any, node: Node, rows: list[HeldMessage], present: set[str], in_queue: int
) -> tuple[int, int]:
    """Store newly seen held messages once and mark those that left the queue GONE.

    Returns (new rows, rows marked gone).
    """
    queue_ids = [r.queue_id for r in rows]

    def existing() -> int:
        return sum(
            HeldMessage.objects.filter(node=node, queue_id__in=queue_ids[i : i + 5000]).count()
            for i in range(0, len(queue_ids), 5000)
        )

    # ignore_conflicts leaves primary keys unset, so count what this run added.
    before = existing() if rows else 0
    HeldMessage.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
    new = existing() - before if rows else 0
    onhold = list(
        HeldMessage.objects.filter(node=node, status=Status.ONHOLD).values_list("pk", "queue_id")
    )
    gone = [pk for pk, queue_id in onhold if queue_id not in present]
    seen = [pk for pk, queue_id in onhold if queue_id in present]
    now = timezone.now()
    gone_count = 0
    for start in range(0, len(gone), 5000):
        # Conditional: a message an administrator claimed meanwhile keeps its outcome.
        gone_count += HeldMessage.objects.filter(
            pk__in=gone[start : start + 5000], status=Status.ONHOLD
        ).update(status=Status.GONE, last_seen_at=now)
    for start in range(0, len(seen), 5000):
        HeldMessage.objects.filter(pk__in=seen[start : start + 5000]).update(last_seen_at=now)
    if new or gone_count:
        auditing.record(
            "spamhold.ingested",
            obj=node,
            customer_path=node.customer_path,
            extra={"new": new, "gone": gone_count, "inQueue": in_queue},
        )
    return new, gone_count
