"""Usage counting and the resource-limit checks of every mail create or quota change.

Limits (``tenants.ResourceLimit``) hold for a whole subtree. A create locks the limit rows
of its ancestors that cap the resources it adds, always root first (ordered by path, and an
ancestor's path is a prefix of its descendants'), then sums the usage of those subtrees and
refuses what does not fit. Concurrent creates under the same limited ancestor therefore
queue on that row and each sees what the previous one committed: exactly those that fit
succeed. Usage is kept per customer in :class:`mail.models.MailUsage`, updated in the same
transaction, so a subtree's usage is a sum over its customers, not a scan of its mailboxes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, F, Q, Sum
from django.utils.translation import gettext as _

from licensing import enforce as licence
from tenants.limits import RESOURCE_LABELS, ResourceLimit
from tenants.models import Customer
from ums import scoping

from .models import Alias, Domain, DomainAlias, Mailbox, MailUsage

# Usage column of MailUsage per limited resource (quota is counted in MB).
_COLUMN = {
    "domains": "domains",
    "mailboxes": "mailboxes",
    "aliases": "aliases",
    "quota_gb": "quota_mb",
}
_UNIT = {"domains": 1, "mailboxes": 1, "aliases": 1, "quota_gb": 1024, "cloud_gb": 1024}


def usage_of_subtrees(paths: Iterable[str]) -> dict[str, dict[str, int]]:
    """{path: {resource: usage}} of each subtree, in one query (quota in MB).

    Written as SQL: one indexed prefix range per path, ``UNION ALL``-ed; the ORM's
    aggregate-with-filter version cost more to compile than to run.
    """
    wanted = list(dict.fromkeys(paths))
    if not wanted:
        return {}
    table = connection.ops.quote_name(MailUsage._meta.db_table)
    # Only the table name (from the model) is formatted in; every value is a parameter.
    part = (
        "SELECT %s, COALESCE(SUM(domains), 0), COALESCE(SUM(mailboxes), 0), "  # noqa: S608
        f"COALESCE(SUM(aliases), 0), COALESCE(SUM(quota_mb), 0) FROM {table} "
        "WHERE customer_path LIKE %s"
    )
    sql = " UNION ALL ".join([part] * len(wanted))
    params: list[Any] = []
    for index, path in enumerate(wanted):
        params += [index, _like_prefix(path)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    result = {}
    for index, domains, mailboxes, aliases, quota in rows:
        result[wanted[int(index)]] = {
            "domains": int(domains),
            "mailboxes": int(mailboxes),
            "aliases": int(aliases),
            "quota_gb": int(quota),
        }
    return result


def _like_prefix(path: str) -> str:
    escaped = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _label(customer: Customer, actor: Any) -> str:
    if actor is None or scoping.in_scope(customer, actor):
        return f"“{customer.name}”"
    return _("a customer above yours")


def _message(resource: str, cap: int, used: int, adding: int, who: str) -> str:
    if resource == "quota_gb":
        return _(
            "This needs %(adding)d MB more quota, but only %(left)d MB are left under the "
            "limit of %(cap)d GB of total quota set by %(customer)s."
        ) % {"adding": adding, "left": max(cap * 1024 - used, 0), "cap": cap, "customer": who}
    return _(
        "The limit of %(cap)d %(what)s set by %(customer)s is reached (%(used)d in use, "
        "%(adding)d more needed)."
    ) % {
        "cap": cap,
        "what": RESOURCE_LABELS[resource],
        "customer": who,
        "used": used,
        "adding": adding,
    }


def reserve(
    customer: Customer,
    *,
    actor: Any,
    domains: int = 0,
    mailboxes: int = 0,
    aliases: int = 0,
    quota_mb: int = 0,
) -> None:
    """Check the limits above ``customer`` for these additions, then count them as used.

    Call inside the action's transaction, as late as the action allows: the ancestors'
    limit rows stay locked from here to the commit, and every create below them queues on
    them. Negative amounts (deletes, smaller quotas) are never refused.

    The own usage row is counted last, under the limit locks: locks are always taken limit
    rows first, then usage rows, so an import reserving for several customers in one
    transaction cannot deadlock with a single create (counting first would lock a usage
    row before the limit row).
    """
    # The product licence first: it holds for the whole installation (licensing.enforce).
    licence.check(users=mailboxes, storage_mb=quota_mb)
    delta = {"domains": domains, "mailboxes": mailboxes, "aliases": aliases, "quota_gb": quota_mb}
    growing = [r for r in delta if delta[r] > 0]
    if growing:
        capped = Q()
        for resource in growing:
            capped |= Q(**{f"max_{resource}__isnull": False})
        limits = list(
            ResourceLimit.objects.select_for_update()
            .filter(capped, customer_id__in=[*customer.ancestor_ids, customer.pk])
            .order_by("customer_path")
        )
        if limits:
            usage = usage_of_subtrees([row.customer_path for row in limits])
            for row in limits:
                for resource in growing:
                    cap = row.limit_of(resource)
                    if cap is None:
                        continue
                    used = usage[row.customer_path][resource]
                    if used + delta[resource] > cap * _UNIT[resource]:
                        owner = Customer.objects.get(pk=row.customer_id)
                        key = "quota_mb" if resource == "quota_gb" else "limit"
                        raise ValidationError(
                            {
                                key: _message(
                                    resource, cap, used, delta[resource], _label(owner, actor)
                                )
                            }
                        )
    if any(delta.values()):
        add(customer, **{_COLUMN[r]: delta[r] for r in delta})


def add(customer: Customer, **amounts: int) -> None:
    """Adjust the customer's own usage row (created on first use)."""
    updates = {k: F(k) + v for k, v in amounts.items() if v}
    if not updates:
        return
    if not MailUsage.objects.filter(pk=customer.pk).update(**updates):
        MailUsage.objects.get_or_create(
            customer_id=customer.pk, defaults={"customer_path": customer.path}
        )
        MailUsage.objects.filter(pk=customer.pk).update(**updates)


def recount(customers: Iterable[Customer] | None = None) -> int:
    """Recompute usage rows from the objects themselves (repair tool); returns rows written."""
    targets = list(customers) if customers is not None else list(Customer.objects.all())
    ids = [c.pk for c in targets]
    counts: dict[int, dict[str, int]] = {
        pk: {"domains": 0, "mailboxes": 0, "aliases": 0, "quota_mb": 0} for pk in ids
    }
    for row in (
        Domain.objects.filter(customer_id__in=ids).values("customer_id").annotate(n=Count("id"))
    ):
        counts[row["customer_id"]]["domains"] += row["n"]
    for row in (
        DomainAlias.objects.filter(customer_id__in=ids)
        .values("customer_id")
        .annotate(n=Count("id"))
    ):
        counts[row["customer_id"]]["domains"] += row["n"]
    for row in (
        Mailbox.objects.filter(customer_id__in=ids)
        .values("customer_id")
        .annotate(n=Count("id"), q=Sum("quota_mb"))
    ):
        counts[row["customer_id"]]["mailboxes"] += row["n"]
        counts[row["customer_id"]]["quota_mb"] += row["q"] or 0
    for row in (
        Alias.objects.filter(customer_id__in=ids, is_system=False)
        .values("customer_id")
        .annotate(n=Count("id"))
    ):
        counts[row["customer_id"]]["aliases"] += row["n"]
    paths = {c.pk: c.path for c in targets}
    for pk, values in counts.items():
        MailUsage.objects.update_or_create(
            customer_id=pk, defaults={"customer_path": paths[pk], **values}
        )
    return len(counts)


def usage_provider(paths: Iterable[str]) -> dict[str, dict[str, int]]:
    """Registered with tenants.limits: subtree usage for the limit-setting action."""
    return usage_of_subtrees(paths)
