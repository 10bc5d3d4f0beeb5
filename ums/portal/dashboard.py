"""What the home dashboard shows: the state of the administrator's subtree at a glance.

Every figure comes through :func:`ums.scoping.scope_queryset`, and each panel is one query
(or a fixed few) whatever the size of the tree. ``ums`` may not import the apps, so models
are looked up through the app registry; a panel the administrator has no permission for is
not computed at all.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.db import models
from django.db.models.functions import TruncDate
from django.utils import timezone

from ums import scoping
from ums.models import Job
from ums.portal import jobtext

RECENT_JOBS = 5
ALERTS_SHOWN = 8
CHART_DAYS = 14
# Node states an administrator should look at (servers.choices.NodeStatus values).
TROUBLED_NODE_STATUSES = ("degraded", "offline")
HELD_STATUS = "ONHOLD"


@dataclass
class DayCount:
    """One point of a per-day chart, shaped like a metric sample (``at`` and a value)."""

    at: datetime.datetime
    count: int


@dataclass(frozen=True)
class Stat:
    """A tile an app adds to the counts row (registered with :func:`register_stat_provider`)."""

    value: str
    label: str
    url: str = ""
    warn: bool = False


StatProvider = Callable[[Any], list[Stat]]
_stat_providers: list[StatProvider] = []


def register_stat_provider(provider: StatProvider) -> None:
    """Apps add tiles without ``ums`` importing them; a provider returns [] for users it
    does not concern."""
    if provider not in _stat_providers:
        _stat_providers.append(provider)


@dataclass
class Dashboard:
    counts: dict[str, int] = field(default_factory=dict)
    alerts: list[Any] = field(default_factory=list)
    troubled_nodes: list[Any] = field(default_factory=list)
    failed_jobs: list[Job] = field(default_factory=list)
    running_jobs: list[Job] = field(default_factory=list)
    quota: dict[str, Any] | None = None
    held_per_day: list[DayCount] = field(default_factory=list)
    mailboxes_per_day: list[DayCount] = field(default_factory=list)
    stats: list[Stat] = field(default_factory=list)


def _scoped(label: str, user: Any) -> models.QuerySet:
    return scoping.scope_queryset(apps.get_model(label)._default_manager.all(), user)


def per_day(queryset: models.QuerySet, column: str, days: int = CHART_DAYS) -> list[DayCount]:
    """Rows per calendar day over the last ``days`` days, zero-filled (one query)."""
    today = timezone.localdate()
    first = today - datetime.timedelta(days=days - 1)
    start = timezone.make_aware(datetime.datetime.combine(first, datetime.time.min))
    rows = (
        queryset.filter(**{f"{column}__gte": start})
        .annotate(day=TruncDate(column))
        .order_by()
        .values("day")
        .annotate(n=models.Count("pk"))
    )
    found = {row["day"]: row["n"] for row in rows}
    points = []
    for offset in range(days):
        day = first + datetime.timedelta(days=offset)
        at = timezone.make_aware(datetime.datetime.combine(day, datetime.time(12)))
        points.append(DayCount(at=at, count=found.get(day, 0)))
    return points


QUOTA_ROWS = (
    # (resource, MailUsage column, ResourceLimit column, limit unit in the usage unit)
    ("quota", "quota_mb", "max_quota_gb", 1024),
    ("mailboxes", "mailboxes", "max_mailboxes", 1),
    ("domains", "domains", "max_domains", 1),
)


def _quota(user: Any, usage: dict[str, int | None], used_bytes: int | None) -> dict[str, Any]:
    """What the subtree holds against the home customer's resource limits (empty: unlimited)."""
    limit = _scoped("tenants.ResourceLimit", user).filter(customer_id=user.customer_id).first()
    rows = []
    for resource, column, limit_column, unit in QUOTA_ROWS:
        used = int(usage.get(column) or 0)
        maximum = getattr(limit, limit_column, None) if limit is not None else None
        maximum = maximum * unit if maximum is not None else None
        rows.append(
            {
                "resource": resource,
                "used": used,
                "limit": maximum,
                "percent": min(100, int(100 * used / maximum)) if maximum else None,
                "over": maximum is not None and used > maximum,
            }
        )
    return {"rows": rows, "used_bytes": used_bytes}


def build(user: Any) -> Dashboard:
    """The dashboard of ``user``: a fixed number of queries, all scoped."""
    board = Dashboard()
    can = user.has_permission
    if can("customers.view"):
        board.counts["customers"] = _scoped("tenants.Customer", user).count()
    if can("mail.view"):
        # MailUsage keeps per-customer totals in step with every change: a subtree's counts
        # are a sum over its customers, not a scan of its mailboxes.
        usage = _scoped("mail.MailUsage", user).aggregate(
            domains=models.Sum("domains"),
            mailboxes=models.Sum("mailboxes"),
            quota_mb=models.Sum("quota_mb"),
        )
        board.counts["domains"] = int(usage["domains"] or 0)
        board.counts["mailboxes"] = int(usage["mailboxes"] or 0)
        mailboxes = _scoped("mail.Mailbox", user)
        used_bytes = mailboxes.aggregate(used=models.Sum("used_bytes"))["used"]
        board.mailboxes_per_day = per_day(mailboxes, "created_at")
        board.quota = _quota(user, usage, used_bytes)
    if can("servers.view"):
        nodes = _scoped("servers.Node", user).exclude(status="decommissioned")
        board.counts["nodes"] = nodes.count()
        board.alerts = list(
            _scoped("servers.NodeAlert", user)
            .filter(resolved_at__isnull=True)
            .select_related("node")
            .order_by("-created_at")[:ALERTS_SHOWN]
        )
        # A node whose alert is listed already needs no second line.
        alerted = {alert.node_id for alert in board.alerts}
        board.troubled_nodes = list(
            nodes.filter(status__in=TROUBLED_NODE_STATUSES)
            .exclude(pk__in=alerted)
            .order_by("hostname")[:ALERTS_SHOWN]
        )
    if can("spamhold.view"):
        held = _scoped("spamhold.HeldMessage", user)
        board.counts["held"] = held.filter(status=HELD_STATUS).count()
        board.held_per_day = per_day(held, "received_at")
    jobs = scoping.scope_queryset(Job.objects.all(), user).only(
        "id",
        "title",
        "kind",
        "status",
        "progress_done",
        "progress_total",
        "created_at",
        "error",
        "params",
        "object_type",
        "object_id",
    )
    board.failed_jobs = list(jobs.filter(status=Job.FAILED).order_by("-id")[:RECENT_JOBS])
    board.running_jobs = list(
        jobs.filter(status__in=(Job.PENDING, Job.RUNNING)).order_by("-id")[:RECENT_JOBS]
    )
    jobtext.attach_hosts([*board.failed_jobs, *board.running_jobs])
    for provider in _stat_providers:
        board.stats.extend(provider(user))
    return board
