"""State changes of replication: the policy, "sync now", failover and failback.
Servers permissions, scoped by the domain; audited; node work is a job."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from deploy.models import DomainPlacement
from mail.models import Domain
from servers.choices import Redundancy
from servers.models import Node
from tenants import permissions as perms
from tenants.models import Customer
from ums import auditing, jobs
from ums.actions import action, require_in_scope, require_permission
from ums.models import Job

from .failover import FAILBACK_JOB, FAILOVER_JOB, SYNC_JOB
from .models import DomainReplica, ReplicationPolicy
from .sync import current_epoch

POLICY_FIELDS = frozenset(ReplicationPolicy.audit_fields)
_DOMAIN_JOBS = (FAILOVER_JOB, FAILBACK_JOB, SYNC_JOB)


@action
def set_policy(*, actor: Any, customer: Customer, **values: Any) -> ReplicationPolicy:
    """Create or change the replication policy of ``customer`` and its sub-tree."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(customer, actor)
    unknown = set(values) - POLICY_FIELDS
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})
    policy, created = ReplicationPolicy.objects.select_for_update().get_or_create(
        customer=customer, defaults={"customer_path": customer.path}
    )
    before = auditing.snapshot(policy)
    for key, value in values.items():
        setattr(policy, key, value)
    policy.full_clean(exclude=["customer", "customer_path"], validate_unique=False)
    policy.save()
    old, new = auditing.diff(before, auditing.snapshot(policy))
    if new or created:
        auditing.record("replication_policy.update", obj=policy, before=old, after=new)
    return policy


@action
def clear_policy(*, actor: Any, customer: Customer) -> None:
    """Remove ``customer``'s own replication policy: it inherits its parent's again."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(customer, actor)
    policy = ReplicationPolicy.objects.select_for_update().filter(customer=customer).first()
    if policy is None:
        return
    before = auditing.snapshot(policy)
    auditing.record("replication_policy.delete", obj=policy, before=before)
    policy.delete()


def running(domain: Domain, kinds: tuple[str, ...] = _DOMAIN_JOBS) -> Job | None:
    return Job.objects.filter(
        kind__in=kinds,
        object_type="mail.domain",
        object_id=str(domain.pk),
        status__in=(Job.PENDING, Job.RUNNING),
    ).first()


def enqueue_sync(domain: Domain, actor: Any = None) -> Job:
    return jobs.enqueue(
        SYNC_JOB,
        actor=actor,
        title=_("Sync replicas of %(domain)s") % {"domain": domain.name},
        customer_path=domain.customer_path,
        target=domain,
        params={"domain_id": domain.pk},
    )


@action
def sync_now(*, actor: Any, domain: Domain) -> Job:
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(domain, actor)
    if not DomainReplica.objects.filter(domain=domain).exists():
        raise ValidationError({"domain": _("This domain has no replica.")})
    job = running(domain, (SYNC_JOB,)) or enqueue_sync(domain, actor)
    auditing.record("replication.sync_request", obj=domain, extra={"job": job.pk})
    return job


def _one_click_target(primary: Node, replicas: Any) -> Node | None:
    """The replica one click promotes: in a HOT-WARM primary zone a warm replica of
    another zone first (that zone takes over), else, and within that, the replica whose
    last completed sync is the newest (it loses the least)."""
    rows = list(replicas.select_related("node"))
    warm = primary.zone.redundancy == Redundancy.HOT_WARM
    rows.sort(
        key=lambda r: (
            0 if warm and r.node.zone_id != primary.zone_id else 1,
            -(r.synced_at.timestamp() if r.synced_at else 0),
            r.node_id,
        )
    )
    return rows[0].node if rows else None


def _switch_job(
    kind: str, *, actor: Any, domain: Domain, node: Node | None, title: str, **extra: Any
) -> Job:
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(domain, actor)
    placement = DomainPlacement.objects.select_related("node__zone").filter(domain=domain).first()
    errors: dict[str, list[str]] = {}
    replicas = DomainReplica.objects.filter(domain=domain, state=DomainReplica.SYNCED)
    if node is None:
        node = _one_click_target(placement.node, replicas) if placement else None
    elif not replicas.filter(node=node).exists():
        errors["node"] = [_("This node holds no synced replica of the domain.")]
    if placement is None:
        errors["domain"] = [_("This domain is not placed on any node.")]
    elif node is None:
        errors.setdefault("node", []).append(_("This domain has no synced replica."))
    busy = running(domain, (FAILOVER_JOB, FAILBACK_JOB))
    if busy is not None:
        errors.setdefault("domain", []).append(
            _("A failover or failback of this domain is already running.")
        )
    if errors:
        raise ValidationError(errors)
    job = jobs.enqueue(
        kind,
        actor=actor,
        title=title % {"domain": domain.name, "node": node.hostname},
        customer_path=domain.customer_path,
        target=domain,
        params={
            "domain_id": domain.pk,
            "node_id": node.pk,
            "from_node_id": placement.node_id,
            "epoch": current_epoch(domain.pk),
            **extra,
        },
    )
    auditing.record(
        f"{kind}_request",
        obj=domain,
        extra={"job": job.pk, "from": placement.node.hostname, "to": node.hostname},
    )
    return job


@action
def start_failover(*, actor: Any, domain: Domain, node: Node | None = None) -> Job:
    """Promote a replica (``node``, or the most recent one) of a domain whose primary is
    offline. The job refuses if the primary still answers."""
    return _switch_job(
        FAILOVER_JOB,
        actor=actor,
        domain=domain,
        node=node,
        title=_("Fail %(domain)s over to %(node)s"),
    )


@action
def start_failback(*, actor: Any, domain: Domain, node: Node | None = None) -> Job:
    """Switch a domain to a replica while its primary is online, losing nothing."""
    return _switch_job(
        FAILBACK_JOB,
        actor=actor,
        domain=domain,
        node=node,
        title=_("Switch %(domain)s to %(node)s"),
    )
