"""Turns what other apps announce into node work: mail changes (outbox rows and their
after-commit signal), node approvals, renewed certificates, and jobs given up."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.dispatch import receiver

from mail import signals as mail_signals
from mail.signals import mail_changed
from servers import actions as server_actions
from servers.models import Node
from servers.signals import node_approved
from ums import jobs, outbox
from ums.models import Job, Outbox

from . import dirty, placement
from .actions import schedule_verification
from .services.nginx import tasks as nginx_tasks

logger = logging.getLogger(__name__)


@receiver(node_approved)
def verify_approved_node(sender: Any, node_id: int, **kwargs: Any) -> None:
    """Approval: verify the node, then run a full converge (packages included).

    The converge follows unless ``UMS_CONVERGE_ON_APPROVAL`` is off (tests/servers turn it
    off: their nodes share the host's package paths, so installing Postfix there would
    touch the test machine itself).
    """
    with transaction.atomic():
        schedule_verification(node_id)
    if settings.UMS_CONVERGE_ON_APPROVAL and dirty.enabled():
        node = Node.objects.get(pk=node_id)
        dirty.mark([node_id], reason="approved")
        # The new node may be a relay target or upstream of its neighbours.
        others = [pk for pk in dirty.nodes_serving(node.customer_path) if pk != node_id]
        if others:
            dirty.mark(others, reason=f"node {node.hostname} approved")


@receiver(mail_changed)
def converge_after_mail_change(sender: Any, customer_path: str, **kwargs: Any) -> None:
    """The fast path: consume the change's outbox row right after its commit (the
    reconciler consumes it later if this process dies first)."""
    outbox_id = kwargs.get("outbox_id")
    if outbox_id is not None:
        outbox.process(outbox_id)
        return
    with transaction.atomic():
        _mail_changed(customer_path, kwargs)


@outbox.consumer(mail_signals.TOPIC)
def consume_mail_change(row: Outbox) -> None:
    _mail_changed(row.customer_path, row.payload)


def _mail_changed(customer_path: str, change: dict[str, Any]) -> None:
    # A new domain is placed on its IMAP node before any node converges, so the SMTP
    # node's first transport map already points at the right node.
    domain_ids = change.get("domain_ids") or ()
    if domain_ids:
        try:
            # Its writes are an action (their own savepoint, rolled back when they raise),
            # so the consumer's transaction and the outbox row's processing go on either
            # way; a failed read fails the transaction, and the reconciler runs the row
            # again.
            placement.place_domains(domain_ids, actor=None)
        except Exception:
            # The change is committed; the next converge's desired.build places it.
            logger.exception("placing domains %s failed", list(domain_ids))
    dirty.on_mail_changed(
        customer_path,
        kind=change.get("kind") or "",
        new_mailbox_ids=change.get("new_mailbox_ids") or (),
    )


@receiver(jobs.job_gave_up)
def alert_on_abandoned_node_job(sender: Any, job: Job, reason: str, **kwargs: Any) -> None:
    """A node job given up for good shows on the node (servers' alerts)."""
    if job.object_type != "servers.node" or not job.object_id.isdigit():
        return
    node = Node.objects.filter(pk=int(job.object_id)).first()
    if node is not None:
        server_actions.raise_alert(node, "job_failed", f"{job.title}: {reason}")


# --------------------------------------------------------------------------- certificates


def load_balancers_using(names: list[str]) -> list[int]:
    """Load balancer nodes whose nginx configuration includes one of the certificates.

    Each candidate's configuration is rendered as converge would render it; a node whose
    rendering fails is included too, so its converge reports why.
    """
    from . import desired
    from .services import registry
    from .services.nginx import SERVICE as DEFAULT_NGINX

    service = next((s for s in registry.SERVICES if s.name == "nginx"), DEFAULT_NGINX)
    wanted = {f"/ums/tls/{name}.crt" for name in names}
    affected: list[int] = []
    for node in Node.objects.filter(status__in=dirty.CONVERGE_STATUSES).order_by("pk"):
        if "loadbalancer" not in (node.roles or ()):
            continue
        try:
            paths = [f.path for f in service.render(desired.build(node))]
        except Exception as exc:
            logger.warning("rendering nginx for %s failed: %s", node.hostname, exc)
            affected.append(node.pk)
            continue
        root = service.config_root.rstrip("/")
        if any(path[len(root) :] in wanted for path in paths if path.startswith(root)):
            affected.append(node.pk)
    return affected


def certificates_renewed(names: list[str]) -> list[int]:
    """Mark the load balancers serving a renewed certificate dirty; their ids."""
    if not dirty.enabled():
        return []
    affected = load_balancers_using(names)
    if affected:
        dirty.mark(affected, reason=f"certificates renewed: {', '.join(sorted(names))}"[:200])
    return affected


nginx_tasks.on_renewed = certificates_renewed
