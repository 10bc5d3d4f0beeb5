"""State changes and rules of controller dumps: who may see them, where they go, and
"Dump now" / "Check dumps" as audited jobs.

A dump holds the whole controller (every customer's data and every key), so only
**operators** see or start dumps: administrators of a top-level customer holding the
servers permissions (``servers.view`` to see, ``servers.manage`` to start). For the same
reason dumps go only to targets owned by a top-level customer: a tenant's own target
never receives another tenant's data. ``UMS_DUMP_TARGETS`` narrows that set further.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.utils.translation import gettext as _

from tenants import permissions as perms
from ums import auditing, jobs
from ums.actions import action, require_in_scope, require_permission
from ums.models import Job

from .models import BackupTarget

DUMP_JOB = "backup.dump"
CHECK_JOB = "backup.check_dumps"


def is_top_level(path: str | None) -> bool:
    """Whether a customer path (``/1/``) is a top-level customer's."""
    return bool(path) and len([p for p in path.split("/") if p]) == 1


def is_operator(user: Any) -> bool:
    """An administrator of a top-level customer (what "sees the whole controller" means)."""
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and is_top_level(getattr(user, "customer_path", None))
    )


def require_operator(actor: Any, code: str) -> None:
    if actor is None:
        return
    require_permission(actor, code)
    if not is_operator(actor):
        raise PermissionDenied(
            _("Controller dumps hold every customer's data: only operators may use them.")
        )


def dump_targets() -> QuerySet[BackupTarget]:
    """Targets dumps are written to: top-level customers' targets, narrowed by
    ``UMS_DUMP_TARGETS`` (target ids or names) when it is set."""
    wanted = list(getattr(settings, "UMS_DUMP_TARGETS", []) or [])
    queryset = BackupTarget.objects.filter(customer__parent__isnull=True).order_by("id")
    if wanted:
        ids = [int(w) for w in wanted if str(w).isdigit()]
        names = [str(w) for w in wanted if not str(w).isdigit()]
        from django.db.models import Q

        queryset = queryset.filter(Q(pk__in=ids) | Q(name__in=names))
    return queryset


def busy() -> bool:
    return Job.objects.filter(kind=DUMP_JOB, status__in=(Job.PENDING, Job.RUNNING)).exists()


def enqueue_dump(actor: Any, title: str, customer_path: str) -> Job:
    return jobs.enqueue(DUMP_JOB, actor=actor, title=title, customer_path=customer_path, params={})


@action
def start_dump(*, actor: Any) -> Job:
    """ "Dump now": a job dumps the controller to every dump target."""
    require_operator(actor, perms.SERVERS_MANAGE)
    if not dump_targets().exists():
        raise ValidationError(
            {"target": _("No backup target of a top-level customer is configured for dumps.")}
        )
    if busy():
        raise ValidationError({"job": _("A controller dump is already pending or running.")})
    job = enqueue_dump(actor, _("Controller dump"), actor.customer_path if actor else "/")
    auditing.record(
        "backup_dump.request",
        object_type="ums.job",
        object_id=job.pk,
        object_repr=job.title,
        customer_path=job.customer_path,
        extra={"job": job.pk},
    )
    return job


@action
def start_dump_check(*, actor: Any, target: BackupTarget) -> Job:
    """ "Check dumps": a job re-reads every dump on ``target`` against its manifest."""
    require_operator(actor, perms.SERVERS_MANAGE)
    require_in_scope(target, actor)
    job = jobs.enqueue(
        CHECK_JOB,
        actor=actor,
        title=_("Check dumps on %(name)s") % {"name": target.name},
        customer=target.customer,
        target=target,
        params={"target_id": target.pk},
    )
    auditing.record("backup_dump.check", obj=target, extra={"job": job.pk})
    return job
