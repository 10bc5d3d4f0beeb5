""" "Verify copies": the action, the job and the schedule of off-node copy verification
(the checks themselves: :mod:`backup.offnode_verify`).

A job verifies the copies of one IMAP node (its setting's "Verify copies", and the
schedule: every ``verify_every_days`` of the setting, 0 = only on request) or of one
domain (the copy's API action, the domain's "Verify copies" on its snapshot page).
Copies on a target are read back through :mod:`backup.offnode_verify`; copies on a backup
node are checked on that node (GUIDs, a read of the kept series:
:mod:`backup.offnode_verify_node`). Each copy's result (when, ok or the error naming the
object) is stored on its :class:`OffnodeCopy` row as soon as it is known and audited;
a copy that fails raises a node alert on its source node (as a given-up node job does)
and fails the job, so both the dashboard's alerts and its failed jobs show it. The alert
is resolved once every verified copy of that node passes again.

Crash safety: a worker killed mid-way leaves the job running; the jobs reconciler runs
it again and it skips the copies already verified since the job was created.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from servers import actions as server_actions
from servers.models import Node
from tenants import permissions as perms
from ums import auditing, jobs
from ums.actions import action, require_in_scope, require_permission
from ums.models import Job

from . import drivers, offnode_verify, offnode_verify_node
from .models_offnode import OffnodeCopy, OffnodeSetting

logger = logging.getLogger(__name__)
VERIFY_JOB = "backup.offnode_verify"
ALERT_KIND = "offnode_verify"
#: Copies on a target: objects read back without a node.
TARGET_KINDS = (OffnodeCopy.TARGET, OffnodeCopy.ARCHIVE)


def verified_copies() -> Any:
    """Every copy a verification reads: on a target, or a dataset on a backup node."""
    return OffnodeCopy.objects.filter(
        Q(kind__in=TARGET_KINDS, target__isnull=False)
        | Q(kind=OffnodeCopy.NODE, backup_node__isnull=False)
    )


def is_verifiable(copy: OffnodeCopy) -> bool:
    if copy.kind == OffnodeCopy.NODE:
        return copy.backup_node_id is not None
    return copy.kind in TARGET_KINDS and copy.target_id is not None


def _running(object_type: str, object_id: Any) -> Job | None:
    return Job.objects.filter(
        kind=VERIFY_JOB,
        object_type=object_type,
        object_id=str(object_id),
        status__in=(Job.PENDING, Job.RUNNING),
    ).first()


def enqueue_node(node: Node, actor: Any = None) -> Job:
    return _running("servers.node", node.pk) or jobs.enqueue(
        VERIFY_JOB,
        actor=actor,
        title=_("Verify the off-node copies of %(node)s") % {"node": node.hostname},
        customer_path=node.customer_path,
        target=node,
        params={"node_id": node.pk},
    )


@action
def start_verify(*, actor: Any, node: Node | None = None, copy: OffnodeCopy | None = None) -> Job:
    """ "Verify copies": every copy (target, backup node) of ``node``, or of ``copy``'s
    domain."""
    require_permission(actor, perms.SERVERS_MANAGE)
    if node is not None:
        require_in_scope(node, actor)
        if not verified_copies().filter(source_node=node).exists():
            raise ValidationError(
                {"node": _("This node has no copy on a backup target or node to verify yet.")}
            )
        job = enqueue_node(node, actor)
        auditing.record("offnode_copy.verify_request", obj=node, extra={"job": job.pk})
        return job
    if copy is None:
        raise ValidationError({"node": _("Choose a node or a copy to verify.")})
    require_in_scope(copy, actor)
    if not is_verifiable(copy):
        raise ValidationError(
            {"copy": _("Only copies on a backup target or a backup node are verified.")}
        )
    job = _running("backup.offnodecopy", copy.pk) or jobs.enqueue(
        VERIFY_JOB,
        actor=actor,
        title=_("Verify the off-node copies of %(domain)s") % {"domain": copy.domain_name},
        customer_path=copy.customer_path,
        target=copy,
        params={"domain_name": copy.domain_name},
    )
    auditing.record(
        "offnode_copy.verify_request",
        obj=copy,
        customer_path=copy.customer_path,
        extra={"job": job.pk, "domain": copy.domain_name},
    )
    return job


def start_verify_domain(*, actor: Any, domain: Any) -> Job:
    """The portal's per-domain "Verify copies": the same job, scope and audit as the
    copy's API action (the domain's first copy stands for all of its copies, so a second
    click while one runs shows that job instead of starting another)."""
    copy = verified_copies().filter(domain=domain).order_by("pk").first()
    if copy is None:
        require_permission(actor, perms.SERVERS_MANAGE)
        raise ValidationError({"copy": _("This domain has no off-node copy to verify yet.")})
    return start_verify(actor=actor, copy=copy)


# ----------------------------------------------------------------------------- the job


def _copies_of(job: Job) -> list[OffnodeCopy]:
    copies = verified_copies().select_related("target", "backup_node", "source_node")
    if job.params.get("node_id"):
        copies = copies.filter(source_node_id=job.params["node_id"])
    else:
        copies = copies.filter(domain_name=job.params.get("domain_name") or "")
    return list(copies.order_by("target_id", "backup_node_id", "domain_name", "kind"))


def _where(copy: OffnodeCopy) -> str:
    """The copy's destination, for messages: the target's or the backup node's name."""
    if copy.kind == OffnodeCopy.NODE and copy.backup_node is not None:
        return copy.backup_node.hostname
    return copy.target.name if copy.target else "?"


def _verify_one(driver: drivers.Target, copy: OffnodeCopy, stats: dict[str, int]) -> list[str]:
    errors = offnode_verify.verify_copy(driver, copy.kind, copy.domain_name, stats)
    if errors:
        # A copy pass that ran meanwhile may have replaced the manifest and deleted what it
        # dropped: read the copy once more; damage is found again, a race is not.
        errors = offnode_verify.verify_copy(driver, copy.kind, copy.domain_name, stats)
    return errors


def _record(copy: OffnodeCopy, errors: list[str]) -> None:
    message = offnode_verify.summary(errors)
    with transaction.atomic():
        OffnodeCopy.objects.filter(pk=copy.pk).update(
            verified_at=timezone.now(), verify_ok=not errors, verify_message=message
        )
        auditing.record(
            "offnode_copy.verified",
            obj=copy,
            customer_path=copy.customer_path,
            extra={
                "ok": not errors,
                "error": message,
                "kind": copy.kind,
                "target": copy.target.name if copy.target else None,
                "backup_node": copy.backup_node.hostname if copy.backup_node else None,
            },
        )


def _alerts(nodes: Iterable[Node]) -> None:
    """A node alert per source node with a failed copy; resolved once all pass."""
    for node in nodes:
        failed = list(
            verified_copies()
            .filter(source_node=node, verify_ok=False)
            .values_list("domain_name", "verify_message")
        )
        if not failed:
            server_actions.resolve_alerts(node, ALERT_KIND)
            continue
        text = "; ".join(f"{name}: {message}" for name, message in failed)
        message = _("Off-node copies failed verification: %(copies)s") % {"copies": text}
        alert = server_actions.raise_alert(node, ALERT_KIND, message[:4000])
        if alert.message != message[:4000]:
            alert.message = message[:4000]
            alert.save(update_fields=["message"])


@jobs.handler(VERIFY_JOB)
def verify_copies(job: Job, reporter: jobs.Reporter) -> dict:
    copies = _copies_of(job)
    if not copies:
        raise jobs.PermanentJobError("No copy on a backup target or node to verify.")
    reporter.progress(0, len(copies))
    stats: dict[str, int] = {"objects": 0, "bytes": 0}
    failed: list[str] = []
    skipped = 0
    drivers_by_target: dict[int, drivers.Target] = {}
    nodes = ExitStack()  # one SSH session per backup node, closed at the end
    conns: dict[int, Any] = {}
    try:
        for done, copy in enumerate(copies, 1):
            if copy.verified_at and copy.verified_at >= job.created_at:
                # Verified by this job's earlier run (its worker died after): not again.
                skipped += 1
                if copy.verify_ok is False:
                    failed.append(f"{copy.domain_name}: {copy.verify_message}")
                reporter.progress(done)
                continue
            try:
                if copy.kind == OffnodeCopy.NODE:
                    errors = _verify_on_node(nodes, conns, copy, stats)
                else:
                    if copy.target_id not in drivers_by_target:
                        drivers_by_target[copy.target_id] = drivers.driver_for(copy.target)
                    errors = _verify_one(drivers_by_target[copy.target_id], copy, stats)
            except Exception as exc:
                # Whatever broke the read (a connection cut mid-object, a backup node that
                # does not answer), the copy was not proven readable: recorded as failed,
                # the others still checked.
                logger.exception("verifying %s on %s", copy.domain_name, _where(copy))
                errors = [f"{_where(copy)}: {jobs.human_error(exc)}"]
            _record(copy, errors)
            if errors:
                failed.append(f"{copy.domain_name}: {offnode_verify.summary(errors)}")
                reporter.say(
                    gettext_noop("%(domain)s: verification failed: %(error)s"),
                    domain=copy.domain_name,
                    error=offnode_verify.summary(errors),
                )
            else:
                reporter.say(gettext_noop("%(domain)s: verified"), domain=copy.domain_name)
            reporter.progress(done)
    finally:
        nodes.close()
        for driver in drivers_by_target.values():
            driver.close()
    _alerts({c.source_node for c in copies if c.source_node is not None})
    if failed:
        raise jobs.PermanentJobError(f"Damaged off-node copies: {'; '.join(failed)}"[:4000])
    return {"verified": len(copies), "resumed_past": skipped, **stats}


def _verify_on_node(
    nodes: ExitStack, conns: dict[int, Any], copy: OffnodeCopy, stats: dict[str, int]
) -> list[str]:
    from deploy.nodes import session

    if copy.backup_node_id not in conns:
        conns[copy.backup_node_id] = nodes.enter_context(session(copy.backup_node))
    conn = conns[copy.backup_node_id]
    errors = offnode_verify_node.verify_node_copy(
        conn, copy.location, copy.snapshots, copy.guids or {}, stats
    )
    if errors:
        # A copy pass may have pruned or replaced snapshots meanwhile: judge against the
        # row as it is now; damage is found again, a race is not.
        copy.refresh_from_db(fields=["snapshots", "guids", "location"])
        errors = offnode_verify_node.verify_node_copy(
            conn, copy.location, copy.snapshots, copy.guids or {}
        )
    return errors


# ------------------------------------------------------------------------ the schedule


def schedule(now: datetime.datetime | None = None) -> dict[str, Any]:
    """A verification job for each node whose ``verify_every_days`` elapsed since its
    last one (started by anyone); the hostnames started."""
    now = now or timezone.now()
    with_copies = set(verified_copies().values_list("source_node_id", flat=True).distinct())
    last = dict(
        Job.objects.filter(kind=VERIFY_JOB, object_type="servers.node")
        .values_list("object_id")
        .annotate(at=Max("created_at"))
    )
    started = []
    settings = OffnodeSetting.objects.filter(verify_every_days__gt=0, node_id__in=with_copies)
    for setting in settings.select_related("node"):
        at = last.get(str(setting.node_id))
        if at and at + datetime.timedelta(days=setting.verify_every_days) > now:
            continue
        enqueue_node(setting.node)
        started.append(setting.node.hostname)
    return {"verify_started": started}
