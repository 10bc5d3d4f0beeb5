"""The job that updates one node's rules and signatures, and the beat task queueing it."""

from __future__ import annotations

from celery import shared_task
from django.db import transaction
from django.utils.translation import gettext_noop

from deploy.connector.base import ConnectorError
from deploy.nodes import session
from servers.choices import NodeStatus
from servers.models import Node
from ums import jobs
from ums.models import Job

from . import enabled, failures, record, run_update

JOB_KIND = "node.update_rules"


@jobs.handler(JOB_KIND)  # idempotent: a second run finds every version current
def update_rules(job: Job, reporter: jobs.Reporter) -> dict:
    from deploy.desired import os_family
    from deploy.services.probes import PYTHON

    node = Node.objects.get(pk=job.params["node_id"])
    try:
        with session(node) as conn:
            outcome = run_update(conn, PYTHON.get(os_family(node.os_id), PYTHON["debian"]))
    except (ConnectorError, RuntimeError) as exc:
        raise jobs.PermanentJobError(f"{type(exc).__name__}: {exc}") from exc
    for part in outcome.values():
        for name, entry in part.items():
            reporter.say(
                gettext_noop("%(name)s: %(status)s %(detail)s"),
                name=name,
                status=entry.get("status", ""),
                detail=str(entry.get("version") or entry.get("sha256", "")[:12] or ""),
            )
    Node.objects.filter(pk=node.pk).update(rule_updates=record(node.rule_updates, outcome))
    failed = failures(outcome)
    if failed:
        raise jobs.PermanentJobError("\n".join(failed)[-3000:])
    return outcome


def start(node: Node, *, actor: object = None) -> Job | None:
    """Queue the update for ``node`` unless one is already waiting or running."""
    with transaction.atomic():
        waiting = Job.objects.filter(
            kind=JOB_KIND, status__in=(Job.PENDING, Job.RUNNING), params__node_id=node.pk
        )
        if waiting.exists():
            return None
        return jobs.enqueue(
            JOB_KIND,
            actor=actor,
            title=f"Update rules and signatures: {node.hostname}",
            customer_path=node.customer_path,
            params={"node_id": node.pk},
            target=node,
        )


@shared_task(name="deploy.update_rules", acks_late=True)
def update_all() -> int:
    """Beat: one update job per active SMTP node; none when no mirror is configured."""
    if not enabled():
        return 0
    queued = 0
    for node in Node.objects.filter(status=NodeStatus.ACTIVE, roles__contains=["smtp"]):
        queued += start(node) is not None
    return queued
