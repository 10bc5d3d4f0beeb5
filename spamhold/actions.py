"""Every state change of held mail: release, delete, bulk outcomes, expiry, retention, ingest.

One outcome per message, asked for as a durable request and confirmed by the node:

1. **Request** (:func:`request_outcome`, the administrator's transaction): the messages
   still on hold and not already requested are claimed with one conditional UPDATE
   (``status = 'ONHOLD' AND outcome = ''``) into a new
   :class:`~spamhold.models.OutcomeIntent`, the claim is audited and a job is enqueued
   (after commit). The caller is answered at once: the claimed messages are *pending*
   (``status`` still ``ONHOLD``, ``outcome`` says what was asked, shown as "Releasing…"),
   and of two administrators acting on the same message exactly one wins; the other is
   told who asked (or who handled it) and when.
2. **Apply** (``spamhold.intents``, the job): per node, read the hold queue, mark and
   move what is still held, read again, and :func:`settle` each row from what the node
   confirms: ``RELEASED``/``DELETED``/``EXPIRED`` when it left the hold queue through our
   command (this attempt's or an earlier one's, per the node's marker file), ``GONE`` when
   it left by other means. A dead worker or a dropped connection leaves the request
   pending; the reconciler (``spamhold.reconcile``) re-drives it, retries node failures
   with backoff and gives up after a cap (:func:`give_up`: messages back on hold with the
   reason, the request failed, audited).

Nothing is delivered twice: ``postsuper`` moves a message out of the hold queue once, and
a retry acts only on ids still in it. Nothing stays held behind a row that says otherwise:
a row changes status only from what the node confirmed.

Release-and-allow and delete-and-block also change the recipient domain's sender lists
through :mod:`mail.actions` (in the settling transaction), so that change is audited and
converged like any other.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

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

from . import intents, retention
from .models import (
    PENDING_STATES,
    HeldMessage,
    HoldRetention,
    IntentState,
    Outcome,
    OutcomeIntent,
    Status,
)
from .outcomes import OutcomeReport

logger = logging.getLogger(__name__)

#: Messages claimed per transaction when a job claims the matches of a filter.
CHUNK = intents.CHUNK

TARGET_STATUS = intents.TARGET_STATUS
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
# What a claimed row says about who asked, cleared when a request is given up.
UNCLAIMED = {"outcome": "", "handled_at": None, "handled_by": None, "handled_by_name": ""}


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


def job_title(outcome: str) -> str:
    label = dict(Outcome.choices)[outcome]
    return _("%(outcome)s held messages") % {"outcome": label}


# ---------------------------------------------------------------------- public API


def release(*, actor: Any, ids: Iterable[int], allow_sender: bool = False) -> OutcomeReport:
    """Ask for held messages to be released (and their senders allow-listed if asked)."""
    outcome = Outcome.RELEASE_ALLOW if allow_sender else Outcome.RELEASE
    return request_outcome(actor=actor, outcome=outcome, ids=ids)


def delete(*, actor: Any, ids: Iterable[int], block_sender: bool = False) -> OutcomeReport:
    """Ask for held messages to be deleted (and their senders block-listed if asked)."""
    outcome = Outcome.DELETE_BLOCK if block_sender else Outcome.DELETE
    return request_outcome(actor=actor, outcome=outcome, ids=ids)


def _new_intent(
    actor: Any,
    outcome: str,
    *,
    filters: dict | None = None,
    max_id: int | None = None,
) -> OutcomeIntent:
    now = timezone.now()
    return OutcomeIntent.objects.create(
        token=uuid.uuid4().hex,
        outcome=outcome,
        customer_path=(scoping.scope_path_of(actor) if actor is not None else None) or "/",
        requested_by=actor,
        requested_by_name=_actor_name(actor),
        requested_at=now,
        filters=filters,
        max_id=max_id,
        claimed_all=filters is None,
        attempts=1,
        # The first job has this long to take the request before the reconciler
        # re-drives it (a dispatch lost between commit and broker).
        next_attempt_at=now + intents.backoff(1),
    )


def _enqueue(actor: Any, intent: OutcomeIntent, total: int) -> Job:
    customer = None
    if actor is not None:
        customer = Customer.objects.filter(pk=actor.customer_id).first()
    job = jobs.enqueue(
        "spamhold.apply",
        actor=actor,
        title=job_title(intent.outcome),
        customer=customer,
        customer_path=None if customer is not None else intent.customer_path,
        params={"intent": intent.pk},
        total=total,
    )
    OutcomeIntent.objects.filter(pk=intent.pk).update(job_id=job.pk)
    intent.job_id = job.pk
    return job


@action
def request_outcome(*, actor: Any, outcome: str, ids: Iterable[int]) -> OutcomeReport:
    """Claim ``ids`` for ``outcome`` as one durable request and enqueue its job.

    Answers at once, per message: ``pending`` (claimed now; the node has not acted yet),
    ``already`` (another request or outcome came first: who and when), ``failed`` (its
    node no longer exists, nothing to ask), ``not_found`` (outside the actor's scope).
    """
    _check_outcome(actor, outcome, user=actor is not None)
    report = OutcomeReport()
    wanted = _clean_ids(ids)
    visible_qs = HeldMessage.objects.filter(pk__in=wanted)
    if actor is not None:
        visible_qs = scoping.scope_queryset(visible_qs, actor)
    visible = dict(visible_qs.values_list("pk", "node_id"))
    report.not_found += [i for i in wanted if i not in visible]
    nodeless = [i for i in wanted if i in visible and visible[i] is None]
    candidates = sorted(i for i in visible if visible[i] is not None)
    # Locked in id order (no deadlock between two bulk requests); a concurrent claim of
    # the same row waits for ours to commit, then PostgreSQL re-checks the condition on
    # the new row version and leaves it out. The UPDATE repeats the condition.
    won = list(
        HeldMessage.objects.select_for_update(of=("self",))
        .filter(pk__in=candidates, status=Status.ONHOLD, outcome="")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    won_set = set(won)
    lost = [i for i in wanted if i in visible and i not in won_set]
    if lost:
        rows = HeldMessage.objects.filter(pk__in=lost).values(
            "pk", "status", "outcome", "handled_by_name", "handled_at", "node_id"
        )
        by_id = {row["pk"]: row for row in rows}
        for pk in lost:
            row = by_id.get(pk)
            if row is None:
                continue
            if pk in nodeless and row["status"] == Status.ONHOLD and not row["outcome"]:
                report.failed.append(
                    {"id": pk, "error": _("The node of this message no longer exists.")}
                )
            else:
                report.already.append(already_entry(row))
    if not won:
        return report
    intent = _new_intent(actor, outcome)
    stamp = intent.requested_at
    HeldMessage.objects.filter(pk__in=won, status=Status.ONHOLD, outcome="").update(
        intent=intent,
        outcome=outcome,
        handled_at=stamp,
        handled_by=actor,
        handled_by_name=_actor_name(actor),
        node_error="",
    )
    claimed = list(HeldMessage.objects.filter(pk__in=won))
    audit_rows(f"spamhold.{outcome}", claimed, extra={"outcome": outcome, "request": intent.pk})
    job = _enqueue(actor, intent, len(won))
    report.pending = [i for i in wanted if i in won_set]
    report.intent = intent.pk
    report.job = job.pk
    return report


def already_entry(row: dict[str, Any]) -> dict[str, Any]:
    handled = row["handled_at"]
    return {
        "id": row["pk"],
        "status": row["status"],
        "outcome": row["outcome"],
        # Someone's request the node has not confirmed yet.
        "pending": bool(row["outcome"]) and row["status"] == Status.ONHOLD,
        "handledBy": row["handled_by_name"],
        "handledAt": handled.isoformat() if handled else None,
    }


def audit_rows(verb: str, rows: list[HeldMessage], extra: dict[str, Any] | None = None) -> None:
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


# ---------------------------------------------------------------------- the job's side


def claim_matches(*, actor: Any, intent: OutcomeIntent, job_id: int, reporter: Any) -> int:
    """Claim every message matching a filtered request, in chunks; how many were claimed.

    The set is what matched when the request was made (ids up to ``max_id``), within the
    requester's scope then. Each chunk commits on its own and renews the lease; running
    it again (after a dead worker) claims only what is left.
    """
    from .query import apply_filters

    claimed = 0
    if intent.max_id is not None:
        queryset = HeldMessage.objects.filter(
            status=Status.ONHOLD,
            outcome="",
            customer_path__startswith=intent.customer_path,
            pk__lte=intent.max_id,
        )
        queryset = apply_filters(queryset, intent.filters or {})
        last = 0
        while True:
            chunk = list(
                queryset.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:CHUNK]
            )
            if not chunk:
                break
            last = chunk[-1]
            claimed += _claim_chunk(actor=actor, intent=intent, ids=chunk)
            intents.renew_lease(intent, job_id)
            reporter.say(gettext_noop("claimed %(count)s matching message(s)"), count=claimed)
    OutcomeIntent.objects.filter(pk=intent.pk).update(claimed_all=True)
    intent.claimed_all = True
    return claimed


@action
def _claim_chunk(*, actor: Any, intent: OutcomeIntent, ids: list[int]) -> int:
    won = list(
        HeldMessage.objects.select_for_update(of=("self",), skip_locked=True)
        .filter(pk__in=ids, status=Status.ONHOLD, outcome="")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if not won:
        return 0
    HeldMessage.objects.filter(pk__in=won, status=Status.ONHOLD, outcome="").update(
        intent=intent,
        outcome=intent.outcome,
        handled_at=intent.requested_at,
        handled_by=intent.requested_by_id,
        handled_by_name=intent.requested_by_name,
        node_error="",
    )
    audit_rows(
        f"spamhold.{intent.outcome}",
        list(HeldMessage.objects.filter(pk__in=won)),
        extra={"outcome": intent.outcome, "request": intent.pk},
    )
    return len(won)


@action
def settle(
    *,
    actor: Any,
    intent: OutcomeIntent,
    done: list[HeldMessage],
    gone: list[HeldMessage],
    failed: dict[int, str] | None = None,
) -> list[dict[str, Any]]:
    """Record what the node confirmed for messages of ``intent``; the policy warnings.

    Conditional on the row still belonging to this request and being on hold, so a second
    settle of the same rows (a retry, ingestion) changes nothing. ``done`` left the hold
    queue through our command, ``gone`` by other means, ``failed`` are still held (the
    reason is shown on the row; the request stays pending).
    """
    now = timezone.now()
    mine = HeldMessage.objects.filter(intent=intent, status=Status.ONHOLD)
    settled_done = list(
        mine.select_for_update(of=("self",)).filter(pk__in=[r.pk for r in done]).order_by("pk")
    )
    if settled_done:
        HeldMessage.objects.filter(pk__in=[r.pk for r in settled_done]).update(
            status=TARGET_STATUS[intent.outcome],
            outcome=intent.outcome,
            handled_at=now,
            handled_by=intent.requested_by_id,
            handled_by_name=intent.requested_by_name,
            node_error="",
            last_seen_at=now,
        )
        audit_rows(
            f"spamhold.{intent.outcome}_done",
            settled_done,
            extra={"outcome": intent.outcome, "request": intent.pk},
        )
    settled_gone = list(
        mine.select_for_update(of=("self",)).filter(pk__in=[r.pk for r in gone]).order_by("pk")
    )
    if settled_gone:
        HeldMessage.objects.filter(pk__in=[r.pk for r in settled_gone]).update(
            status=Status.GONE, node_error="", last_seen_at=now, **UNCLAIMED
        )
        audit_rows(
            "spamhold.gone", settled_gone, extra={"outcome": intent.outcome, "request": intent.pk}
        )
    by_error: dict[str, list[int]] = defaultdict(list)
    for pk, error in (failed or {}).items():
        by_error[error].append(pk)
    for error, pks in by_error.items():
        mine.filter(pk__in=pks).update(node_error=error[:2000])
    warnings: list[dict[str, Any]] = []
    if intent.outcome in POLICY_OUTCOMES and settled_done:
        report = OutcomeReport()
        _update_sender_lists(actor, intent.outcome, settled_done, report)
        warnings = report.warnings
    return warnings


@action
def give_up_rows(*, actor: Any, intent: OutcomeIntent, rows: list[HeldMessage], error: str) -> int:
    """Put ``rows`` of ``intent`` back on hold, unclaimed, with ``error`` on each."""
    pks = [r.pk for r in rows]
    updated = (
        HeldMessage.objects.filter(pk__in=pks, intent=intent, status=Status.ONHOLD)
        .exclude(outcome="")
        .update(node_error=error[:2000], **UNCLAIMED)
    )
    if updated:
        audit_rows(
            f"spamhold.{intent.outcome}_failed",
            list(HeldMessage.objects.filter(pk__in=pks)),
            extra={"outcome": intent.outcome, "request": intent.pk, "error": error[:2000]},
        )
    return updated


@action
def give_up(
    *, actor: Any, intent: OutcomeIntent, error: str, lease_owner: int | None = None
) -> bool:
    """Fail the request with ``error``: its messages go back on hold with the reason.

    Conditional on the request still being pending (and held by ``lease_owner`` if
    given). The messages keep pointing at the request, so a later ingestion can still
    recognise a message our command moved before the connection was lost.
    """
    pending = OutcomeIntent.objects.filter(pk=intent.pk, state__in=PENDING_STATES)
    if lease_owner is not None:
        pending = pending.filter(lease_owner=lease_owner)
    failed = pending.update(
        state=IntentState.FAILED,
        error=error[:4000],
        finished_at=timezone.now(),
        lease_owner=None,
        next_attempt_at=None,
    )
    if not failed:
        return False
    rows = list(intents.pending_rows(intent))
    give_up_rows(actor=actor, intent=intent, rows=rows, error=error)
    auditing.record(
        "spamhold.request_failed",
        object_type=OutcomeIntent._meta.label_lower,
        object_id=intent.pk,
        object_repr=str(intent),
        customer_path=intent.customer_path,
        extra={
            "outcome": intent.outcome,
            "attempts": intent.attempts,
            "messages": len(rows),
            "error": error[:2000],
        },
    )
    logger.error(
        "held-mail request %s (%s, %d messages) gave up after %d attempts: %s",
        intent.pk,
        intent.outcome,
        len(rows),
        intent.attempts,
        error,
    )
    return True


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
) -> Job | None:
    """One request applying ``outcome`` to ``ids`` or to everything matching ``filters``.

    With filters, the set is what matched when the request was made (ids up to the
    highest one at that moment), so mail arriving meanwhile is not swept up; the job
    claims the matches. Returns the request's job (None when no id could be claimed).
    """
    _check_outcome(actor, outcome)
    if (ids is None) == (filters is None):
        raise ValidationError(_("Give either message ids or filters."))
    if ids is not None:
        report = request_outcome(actor=actor, outcome=outcome, ids=ids)
        return Job.objects.filter(pk=report.job).first() if report.job else None
    if not isinstance(filters, dict):
        raise ValidationError({"filters": _("Enter filters as an object.")})
    max_id = HeldMessage.objects.order_by("-pk").values_list("pk", flat=True).first()
    intent = _new_intent(actor, outcome, filters=filters, max_id=max_id)
    auditing.record(
        f"spamhold.{outcome}_matching",
        object_type=OutcomeIntent._meta.label_lower,
        object_id=intent.pk,
        object_repr=str(intent),
        customer_path=intent.customer_path,
        extra={"outcome": outcome, "filters": filters, "maxId": max_id},
    )
    return _enqueue(actor, intent, 0)


# ---------------------------------------------------------------------- expiry


def expire_due(*, now: datetime.datetime | None = None, limit: int = 10_000) -> dict[str, int]:
    """Request the deletion of held messages past their expiry (one request, one job)."""
    now = now or timezone.now()
    due = list(
        HeldMessage.objects.filter(status=Status.ONHOLD, outcome="", expires_at__lte=now)
        .exclude(node=None)
        .order_by("expires_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    if not due:
        return OutcomeReport().counts()
    return request_outcome(actor=None, outcome=Outcome.EXPIRE, ids=due).counts()


# ---------------------------------------------------------------------- ingestion


@action
def record_ingest(
    *,
    actor: Any,
    node: Node,
    rows: list[HeldMessage],
    present: set[str],
    in_queue: int,
    ours: dict[int, set[str]] | None = None,
) -> tuple[int, int]:
    """Store newly seen held messages once and settle those that left the queue.

    A message on hold that left the queue is settled as its request's outcome when the
    node's marker file for that request (``ours``: {request id: queue ids}, read after
    the queue was listed) names it, else ``GONE``. Returns (new rows, rows marked gone).
    """
    ours = ours or {}
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
        HeldMessage.objects.filter(node=node, status=Status.ONHOLD).values_list(
            "pk", "queue_id", "intent_id"
        )
    )
    confirmed: dict[int, list[int]] = defaultdict(list)
    gone: list[int] = []
    seen: list[int] = []
    for pk, queue_id, intent_id in onhold:
        if queue_id in present:
            seen.append(pk)
        elif intent_id is not None and queue_id in ours.get(intent_id, set()):
            confirmed[intent_id].append(pk)
        else:
            gone.append(pk)
    now = timezone.now()
    for intent in OutcomeIntent.objects.filter(pk__in=list(confirmed)).select_related(
        "requested_by"
    ):
        settle(
            actor=intent.requested_by,
            intent=intent,
            done=list(HeldMessage.objects.filter(pk__in=confirmed[intent.pk])),
            gone=[],
        )
    gone_count = 0
    for start in range(0, len(gone), 5000):
        # Conditional: a message settled meanwhile keeps its outcome.
        gone_count += HeldMessage.objects.filter(
            pk__in=gone[start : start + 5000], status=Status.ONHOLD
        ).update(status=Status.GONE, last_seen_at=now, **UNCLAIMED)
    for start in range(0, len(seen), 5000):
        HeldMessage.objects.filter(pk__in=seen[start : start + 5000]).update(last_seen_at=now)
    if new or gone_count or confirmed:
        auditing.record(
            "spamhold.ingested",
            obj=node,
            customer_path=node.customer_path,
            extra={
                "new": new,
                "gone": gone_count,
                "confirmed": sum(len(v) for v in confirmed.values()),
                "inQueue": in_queue,
            },
        )
    return new, gone_count


def absent_requested(node: Node, present: set[str]) -> dict[int, str]:
    """{request id: token} of the node's pending-or-given-up rows missing from the queue:
    the marker files ingestion must read to settle them."""
    rows = (
        HeldMessage.objects.filter(node=node, status=Status.ONHOLD)
        .exclude(intent=None)
        .values_list("queue_id", "intent_id", "intent__token")
    )
    return {intent_id: token for queue_id, intent_id, token in rows if queue_id not in present}


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
