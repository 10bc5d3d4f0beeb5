"""Escrow of resource limits: shares of an ancestor's limit that a customer consumes alone.

Without escrow every create below a limited customer locks that customer's
:class:`~tenants.limits.ResourceLimit` row while it sums the subtree's usage, so all
creates under one limited reseller run one at a time (issue 19). With escrow, an
:class:`LimitEscrow` row per (limited customer, consuming customer) holds units of the
limit granted to the consumer in advance ("slack"); a create takes them with a conditional
``UPDATE`` of its own row and never touches the ancestor's row. When the slack runs out,
the consumer refills it in a batch under the ancestor's lock (``mail.limits``), in one
statement committed apart on a second connection (:mod:`ums.autonomous`), so the lock
lasts that statement, not the create: units granted to a create that then rolls back
stay in its customer's escrow, which the invariant counts.

Invariant, for every limited customer A and resource r (committed state):
``usage(subtree of A, r) + sum of slack(A, *, r) <= limit(A, r)``. A create moves units
from slack to usage in one transaction; a refill grants only what is free under A's row
lock; :func:`reclaim` (A's row locked) zeroes every slack of A, waiting for the creates
that are consuming some, so that afterwards usage alone is exact. Usage itself (the counts
admins see) is never estimated: it is still counted per customer, exactly.

Lock order, the same in every transaction (no deadlock): levels by path, root first; at a
level, a transaction that holds its own escrow row never asks for the level's limit row
(the fast path either matches in one statement or locks nothing). A refill apart is a
second transaction the create waits for outside PostgreSQL's view: it is not tried when
the create's transaction already holds rows of that level, and its lock waits are bounded
(``lock_timeout``); past that the create refills in its own transaction, where the
deadlock detector sees every wait.

Cap changes: a create reads which ancestors have limits without locking their rows, so it
holds a shared advisory lock on each ancestor (:func:`share_chain`); setting a limit takes
it exclusively (:func:`exclude_chain_of`), so no create can be half-way under a limit that
it did not see.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, models
from django.utils.translation import gettext_lazy as _

# Resources kept in escrow: those mail counts per customer (MailUsage columns).
ESCROWED = ("domains", "mailboxes", "aliases", "quota_mb")
# Advisory-lock namespace (first key) of "a limit above this customer may change".
_LOCK_SPACE = 0x4C4D5431  # "LMT1"


class LimitEscrow(models.Model):
    """Units of ``limit_owner``'s limits granted to ``holder`` and not used yet."""

    # No foreign keys in the database (Django still cascades deletes): the check of a new
    # row would take a KEY SHARE lock on the customer rows at commit, and creates hold
    # their customer's row FOR UPDATE (the domain lock joins it) while they wait for a
    # limit row: a deadlock with a refill that inserted a row. A stale row holds nothing
    # that reclaim cannot take back.
    limit_owner = models.ForeignKey(
        "tenants.Customer",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    holder = models.ForeignKey(
        "tenants.Customer", on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    domains = models.BigIntegerField(default=0, db_default=0)
    mailboxes = models.BigIntegerField(default=0, db_default=0)
    aliases = models.BigIntegerField(default=0, db_default=0)
    quota_mb = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        app_label = "tenants"
        verbose_name = _("limit escrow")
        verbose_name_plural = _("limit escrows")
        constraints = [
            models.UniqueConstraint(fields=["limit_owner", "holder"], name="limitescrow_pair"),
            models.CheckConstraint(
                condition=models.Q(
                    domains__gte=0, mailboxes__gte=0, aliases__gte=0, quota_mb__gte=0
                ),
                name="limitescrow_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"escrow of customer {self.limit_owner_id}'s limits held by {self.holder_id}"


def share_chain(customer_ids: Iterable[int]) -> None:
    """Shared advisory locks on these customers (creates below them; never waits but for
    a limit being set on one of them)."""
    ids = sorted(set(customer_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock_shared(%s, i)) FROM unnest(%s::int[]) i",
            [_LOCK_SPACE, ids],
        )


def exclude_chain_of(customer_id: int) -> None:
    """Exclusive advisory lock: waits for every create below ``customer_id`` to finish and
    holds new ones back until this transaction ends (a limit of it is being set)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_SPACE, customer_id])


def reclaim(limit_owner_ids: Iterable[int]) -> None:
    """Take back every unused unit granted from these customers' limits.

    Call with their limit rows locked. The ``UPDATE`` waits for creates that are consuming
    slack of these limits; once it returns, their usage is committed and visible to the
    next statement, so subtree usage alone is what the limits must cover.
    """
    ids = sorted(set(limit_owner_ids))
    if not ids:
        return
    table = connection.ops.quote_name(LimitEscrow._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET domains = 0, mailboxes = 0, aliases = 0, quota_mb = 0 "  # noqa: S608
            "WHERE limit_owner_id = ANY(%s::int[]) "
            "AND (domains > 0 OR mailboxes > 0 OR aliases > 0 OR quota_mb > 0)",
            [ids],
        )
