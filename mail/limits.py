"""Usage counting and the resource-limit checks of every mail create or quota change.

Limits (``tenants.ResourceLimit``) hold for a whole subtree. A create takes what it adds
from the escrow its customer holds of each limited ancestor (:mod:`tenants.escrow`: one
conditional ``UPDATE`` of its own row, no lock shared with other customers); when that runs
dry it refills: one SQL statement, committed apart on a second connection, locks the
ancestor's limit row (root first, ordered by path), sums the subtree's usage and the
escrow granted, and grants a batch of what is free; then the create takes from it. When
not enough is free, every other customer's unused escrow of that limit is taken back
first, so exactly the creates that fit succeed, as before. Usage is kept per customer in
:class:`mail.models.MailUsage`, updated in the same transaction, so a subtree's usage is
a sum over its customers, not a scan of its mailboxes; the escrow never changes it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Count, F, Q, Sum
from django.utils.translation import gettext as _

from licensing import enforce as licence
from tenants import escrow
from tenants.limits import RESOURCE_LABELS, ResourceLimit
from tenants.models import Customer
from ums import autonomous, scoping

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

    Call inside the action's transaction, as late as the action allows. Negative amounts
    (deletes, smaller quotas) are never refused. See :func:`reserve_many`.
    """
    amounts = {"domains": domains, "mailboxes": mailboxes, "aliases": aliases, "quota_mb": quota_mb}
    reserve_many([(customer, amounts)], actor=actor)


# A refill grants at most this many creates' worth ahead, and at most an eighth of what is
# free, so that one customer never holds most of a nearly used limit.
REFILL_CREATES = 32
REFILL_SHARE = 8


def reserve_many(items: list[tuple[Customer, dict[str, int]]], *, actor: Any) -> None:
    """Reserve ``{column: amount}`` (MailUsage columns) for each customer, or refuse all.

    Each limited ancestor A (a "level", root first) is checked through escrow
    (:mod:`tenants.escrow`): a single create takes its units from its own escrow row of A
    (one conditional ``UPDATE``, no lock on A); only when that runs dry, or for a batch of
    several customers (the CSV import), A's limit row is locked and the escrow refilled
    from what is free under A, first taking back every other customer's unused units when
    needed, so a refusal is exact. The own usage rows are counted last.
    """
    # The product licence first: it holds for the whole installation (licensing.enforce).
    licence.check(
        users=sum(max(a.get("mailboxes", 0), 0) for _c, a in items),
        storage_mb=sum(max(a.get("quota_mb", 0), 0) for _c, a in items),
    )
    growing = sorted({col for _c, a in items for col, n in a.items() if n > 0})
    if growing:
        chains = {c.pk: {*c.ancestor_ids, c.pk} for c, _a in items}
        escrow.share_chain(set().union(*chains.values()))
        capped = Q()
        for column in growing:
            capped |= Q(**{f"max_{_RESOURCE[column]}__isnull": False})
        # Read without a lock: the shared advisory locks above keep the caps as read until
        # the commit; the row itself is locked only to refill (see _reserve_level).
        levels = list(
            ResourceLimit.objects.filter(
                capped, customer_id__in=set().union(*chains.values())
            ).order_by("customer_path")
        )
        for level in levels:
            members = [(c, a) for c, a in items if level.customer_id in chains[c.pk]]
            _reserve_level(level, members, fast=len(items) == 1, actor=actor)
    for customer, amounts in items:
        if any(amounts.values()):
            add(customer, **amounts)


_RESOURCE = {"domains": "domains", "mailboxes": "mailboxes", "aliases": "aliases",
             "quota_mb": "quota_gb"}  # fmt: skip


def _needs(row: ResourceLimit, amounts: dict[str, int]) -> dict[str, int]:
    """The positive amounts this limit row caps."""
    return {
        col: n for col, n in amounts.items() if n > 0 and row.limit_of(_RESOURCE[col]) is not None
    }


def _reserve_level(
    level: ResourceLimit,
    members: list[tuple[Customer, dict[str, int]]],
    *,
    fast: bool,
    actor: Any,
) -> None:
    """One limited ancestor: a lone create takes from its escrow, refilling it apart when
    dry; a batch of customers locks the limit row before touching any escrow row (the
    lock order of the module doc of :mod:`tenants.escrow`)."""
    owner_id = level.customer_id
    if fast:
        ((customer, amounts),) = members
        wanted = _needs(level, amounts)
        if not wanted or _take(owner_id, customer.pk, wanted):
            return
        # Dry: refill on a connection of its own, so the limit row is locked for that short
        # transaction only, then take. Not when this transaction already holds escrow rows
        # (or the limit row) of this level: the refill would wait for them forever.
        if not _holds_rows_of(owner_id):
            for _attempt in range(REFILL_TRIES):
                try:
                    _refill(level, customer, wanted, actor=actor, apart=True)
                except autonomous.Unavailable:
                    break
                # Another create of the same customer may have taken the refill first.
                if _take(owner_id, customer.pk, wanted):
                    return
    # In this transaction (a batch, or the refill apart could not run): the limit row
    # stays locked until the commit, as before refills ran apart.
    for customer, amounts in members:
        needs = _needs(level, amounts)
        if needs:
            _refill(level, customer, needs, actor=actor, apart=False)


# Refills apart that a create tries before it refills in its own transaction.
REFILL_TRIES = 3
# Connection attribute: {limit owner id: id of the transaction that holds its rows}.
_HELD_ATTR = "_ums_escrow_rows_held"


def _held() -> dict[int, int]:
    """Levels whose rows this connection's transaction (by id) locked, last seen."""
    wrapper = connections[DEFAULT_DB_ALIAS]
    held = getattr(wrapper, _HELD_ATTR, None)
    if held is None:
        held = {}
        setattr(wrapper, _HELD_ATTR, held)
    return held


def _holds_rows_of(owner_id: int) -> bool:
    """Whether the current transaction locked escrow rows or the limit row of this level
    (it took from its escrow or refilled in itself earlier): a refill apart would wait
    for those locks, which are released only after the refill returns."""
    xid = _held().get(owner_id)
    if xid is None:
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT txid_current_if_assigned()")
        return cursor.fetchone()[0] == xid


def _take(owner_id: int, holder_id: int, wanted: dict[str, int]) -> bool:
    """Take ``wanted`` from the holder's escrow row of this level in one conditional
    ``UPDATE``; False (and no lock kept) when the escrow holds less."""
    table = connection.ops.quote_name(escrow.LimitEscrow._meta.db_table)
    sets = ", ".join(f"{col} = {col} - %s" for col in wanted)
    conds = " AND ".join(f"{col} >= %s" for col in wanted)
    update = (
        f"UPDATE {table} SET {sets} WHERE limit_owner_id = %s AND holder_id = %s "  # noqa: S608
        f"AND {conds} RETURNING txid_current()"
    )
    params = [*wanted.values(), owner_id, holder_id, *wanted.values()]
    # In a savepoint: an UPDATE that waited for another create of the same customer
    # locks the row before it re-checks the slack, and keeps that lock when the check
    # fails; holding it while asking for the limit row would deadlock with a refill that
    # is taking the escrow back. Rolling back the savepoint drops it.
    #
    # Every create runs this per limited level, so the savepoint shares the UPDATE's round
    # trip: Django's psycopg 3 cursors bind values client-side (the settings never turn on
    # server-side binding), which lets one execute carry two statements. On success it is
    # left open: the commit (or an outer savepoint's release or rollback) ends it with the
    # rest of the transaction. Outside a transaction there is nothing to roll back to.
    in_transaction = connection.in_atomic_block
    with connection.cursor() as cursor:
        if in_transaction:
            cursor.execute(f"SAVEPOINT {_TAKE_SAVEPOINT}; {update}", params)
            cursor.nextset()
        else:
            cursor.execute(update, params)
        taken = cursor.fetchone()
        if taken is None:
            if in_transaction:
                cursor.execute(f"ROLLBACK TO SAVEPOINT {_TAKE_SAVEPOINT}")
            return False
    _held()[owner_id] = taken[0]
    return True


# Not one of Django's names (``s<thread>_x<n>``), so its bookkeeping is not disturbed.
_TAKE_SAVEPOINT = "ums_escrow_take"


_COLUMNS = ("domains", "mailboxes", "aliases", "quota_mb")


def _refill(
    level: ResourceLimit, customer: Customer, needs: dict[str, int], *, actor: Any, apart: bool
) -> None:
    """Lock ``level``'s limit row, check that ``needs`` fit (taking every unused unit
    back first when they do not) and grant ``customer`` a batch ahead: SQL function
    ``mail_escrow_refill`` (migration ``mail/0008_writes_escrow_refill``).

    ``apart``: on a second connection, one statement committed at once, and ``needs``
    are granted too (the create then takes them from its escrow). Otherwise in this
    transaction, the row locked until it ends, and the create counts ``needs`` as usage.
    The invariant holds whatever the create does next: units granted apart stay in the
    customer's escrow, counted against the limit, until a create uses them or a take-back
    returns them. A refusal grants nothing.
    """
    params = [
        level.customer_id,
        customer.pk,
        [needs.get(column, 0) for column in _COLUMNS],
        apart,
        REFILL_CREATES,
        REFILL_SHARE,
        autonomous.LOCK_TIMEOUT_MS,
    ]
    sql = (
        "SELECT granted, used, slack, caps, xid "
        "FROM mail_escrow_refill(%s, %s, %s::bigint[], %s, %s, %s, %s)"
    )
    if apart:
        with autonomous.cursor() as cursor:
            cursor.execute(sql, params)
            found = cursor.fetchone()
        if found is None:  # set in the caller's transaction, not committed yet
            raise autonomous.Unavailable("limit row not visible apart")
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            found = cursor.fetchone()
        if found is None:
            raise ResourceLimit.DoesNotExist
        _held()[level.customer_id] = found[4]
    granted, used, slack, caps, _xid = found
    if granted:
        return
    short = [
        i
        for i, column in enumerate(_COLUMNS)
        if needs.get(column, 0) > 0
        and caps[i] is not None
        and caps[i] - used[i] - slack[i] < needs[column]
    ]
    # The function refuses only for a short column; name the first needed one otherwise.
    index = short[0] if short else _COLUMNS.index(next(c for c in _COLUMNS if needs.get(c)))
    column = _COLUMNS[index]
    resource = _RESOURCE[column]
    owner = Customer.objects.get(pk=level.customer_id)
    key = "quota_mb" if resource == "quota_gb" else "limit"
    raise ValidationError(
        {
            key: _message(
                resource,
                (caps[index] or 0) // _UNIT[resource],
                used[index],
                needs[column],
                _label(owner, actor),
            )
        }
    )


def add(customer: Customer, **amounts: int) -> None:
    """Adjust the customer's own usage row (created on first use)."""
    updates = {k: F(k) + v for k, v in amounts.items() if v}
    if not updates:
        return
    if not _add_in_place(customer.pk, {k: v for k, v in amounts.items() if v}):
        MailUsage.objects.get_or_create(
            customer_id=customer.pk, defaults={"customer_path": customer.path}
        )
        MailUsage.objects.filter(pk=customer.pk).update(**updates)


def _add_in_place(customer_id: int, amounts: dict[str, int]) -> int:
    """The queryset ``update(col=F(col) + n)`` of every create, as SQL written once per
    set of columns (issue 19: compiling it cost more CPU than running it); rows updated."""
    columns = tuple(sorted(amounts))
    with connection.cursor() as cursor:
        cursor.execute(_add_sql(columns), [*(amounts[c] for c in columns), customer_id])
        return cursor.rowcount


@functools.cache
def _add_sql(columns: tuple[str, ...]) -> str:
    meta = MailUsage._meta
    quote = connection.ops.quote_name
    # get_field refuses anything that is not a column of the model.
    names = [quote(meta.get_field(column).column) for column in columns]
    sets = ", ".join(f"{name} = {name} + %s" for name in names)
    return f"UPDATE {quote(meta.db_table)} SET {sets} WHERE {quote(meta.pk.column)} = %s"  # noqa: S608


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
