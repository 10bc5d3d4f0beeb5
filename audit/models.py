"""Audit records and the head of their hash chain."""

from __future__ import annotations

from typing import Any

from django.db import connection, models, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat, Substr
from django.db.models.sql.where import ExtraWhere
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import chain, chainer

# A page this long or shorter is read key first (see AuditRecordQuerySet.__getitem__).
KEY_FIRST_MAX = 1001


def _has_extra_where(node: Any) -> bool:
    """``.extra(where=...)`` SQL names the table itself, which a sub-select renames."""
    if isinstance(node, ExtraWhere):
        return True
    return any(_has_extra_where(child) for child in getattr(node, "children", ()))


class AuditRecordQuerySet(models.QuerySet):
    """Pages are read key first: the page's ``seq`` values, then the rows.

    A page of a filtered scope (``customer_path LIKE 'p%' AND actor_id = 2 ORDER BY seq
    DESC LIMIT 51``) is planned with the filters assumed independent: a mid-size subtree
    (3 % of the records) and an actor (0.4 %) look like 500 matches among 5M, and the
    planner intersects two bitmaps of 20,000 and 136,000 rows and sorts them (0.3-1.2 s at
    5M records) although every record of that actor is in the subtree. Reading the keys
    first as a sub-select with its own ``LIMIT`` lets the ``(filter, seq)`` indexes, which
    carry ``customer_path``, answer it from the index alone, newest first, stopping at the
    page's end (~0.1 ms); the outer query then fetches those rows by ``seq``. The rows, their
    order and the filters are the same; only the plan differs.
    """

    def __getitem__(self, k: Any) -> Any:
        if (
            isinstance(k, slice)
            and k.stop is not None
            and k.stop - (k.start or 0) <= KEY_FIRST_MAX
            and self._iterable_class is models.query.ModelIterable
            and self._result_cache is None
            and not self.query.annotations
            and not self.query.extra_select
            and not self.query.distinct
            and not self.query.select_for_update
            and not _has_extra_where(self.query.where)
        ):
            ordering = self.query.order_by or self.model._meta.ordering
            keys = self.values("seq")[k]
            outer = self.model._base_manager.using(self.db).filter(seq__in=keys)
            outer.query.select_related = self.query.select_related
            outer.query.deferred_loading = self.query.deferred_loading
            outer._prefetch_related_lookups = self._prefetch_related_lookups
            return outer.order_by(*ordering)
        return super().__getitem__(k)


class AuditRecordManager(models.Manager.from_queryset(AuditRecordQuerySet)):
    def append(self, *, actor: Any, **values: Any) -> AuditRecord:
        """Insert a record, unchained, in the caller's transaction; it is chained after.

        No shared row is locked (issue 19): ``seq`` comes from a sequence and the record is
        hashed alone (``content_hash``). It is linked into the chain right after the commit
        (inside this transaction when it is nested in an outer block, whose commit may be
        far off) by this session, or by whichever session chains next if another one holds
        the chainer (:mod:`audit.chainer`). A rolled-back transaction leaves a gap in ``seq``
        and nothing in the chain. No savepoint: an append that fails fails the caller's
        whole transaction, as it must.
        """
        # Inside an outer block (a command's, a test's) the commit, and the chaining after
        # it, may be far off: chain in this transaction. The outermost block (an action
        # called on its own, as every request does) commits right after its work, and the
        # pass after that commit chains the record before the action returns: one
        # statement less per write (issue 19).
        chain_now = len(connection.atomic_blocks) > 1
        with transaction.atomic(savepoint=False):
            record = AuditRecord(
                seq=chainer.next_seq(),
                timestamp=timezone.now(),
                actor_id=getattr(actor, "pk", None),
                search_text="",
                hash_version=chain.CURRENT_VERSION,
                **values,
            )
            # The path the record was written with: hashed, never rewritten.
            record.recorded_path = record.customer_path
            record.search_text = record.build_search_text()
            record.content_hash = chain.content_hash(record.hashed_values())
            record.save(force_insert=True)
            if chain_now:
                chainer.chain_pass()
            transaction.on_commit(chainer.chain_after_commit)
        return record

    def move_scope(self, old_path: str, new_path: str) -> int:
        """Rewrite ``customer_path`` of records under ``old_path`` when that subtree moves.

        The only UPDATE the database trigger lets through, and only for this prefix pair
        (passed in a transaction-local setting). The move lock is held until the
        caller's transaction ends, so the ``customer.move`` record the caller appends next
        follows every record rewritten here: verification replays each move on the records
        before it. Call inside the move's transaction, then append the move record.
        """
        if " " in old_path or " " in new_path:
            raise ValueError("customer paths contain no spaces")
        # Waits for appends in flight and holds new ones until this transaction ends: every
        # record rewritten here is committed, so chained before the move record appended next.
        chainer.move_lock()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('ums.audit_scope_move', %s, true)", [f"{old_path} {new_path}"]
            )
            try:
                moved = (
                    self.get_queryset()
                    .filter(customer_path__startswith=old_path)
                    .update(
                        customer_path=Concat(
                            Value(new_path),
                            Substr(F("customer_path"), len(old_path) + 1),
                            output_field=models.CharField(),
                        )
                    )
                )
            finally:
                cursor.execute("SELECT set_config('ums.audit_scope_move', '', true)")
        return moved


class AuditRecord(models.Model):
    """One administrative action: when, who, from where, what, for which customer."""

    scope_path_field = "customer_path"

    seq = models.BigIntegerField(unique=True)
    timestamp = models.DateTimeField(_("time"), db_index=True)
    # Plain ids, not foreign keys: deleting an administrator or customer must never touch
    # (cascade into or null out) the evidence.
    actor_id = models.BigIntegerField(_("actor id"), null=True, blank=True)
    actor_name = models.CharField(_("actor"), max_length=310)
    source_ip = models.GenericIPAddressField(_("source IP"), null=True, blank=True)
    channel = models.CharField(_("channel"), max_length=10)
    request_id = models.CharField(_("request id"), max_length=64)
    action = models.CharField(_("action"), max_length=64)
    object_type = models.CharField(_("object type"), max_length=64, blank=True)
    object_id = models.CharField(_("object id"), max_length=64, blank=True)
    object_repr = models.CharField(_("object"), max_length=300, blank=True)
    customer_id = models.BigIntegerField(_("customer id"), null=True, blank=True)
    # What scoping filters on; rewritten (only) when the customer's subtree moves.
    customer_path = models.CharField(max_length=1000, blank=True)
    # The customer path when written (hash v2). The database default keeps bulk loaders
    # that predate it (benchmarks/seed_audit.py) writing verifiable v1 records.
    recorded_path = models.CharField(max_length=1000, blank=True, default="", db_default="")
    hash_version = models.PositiveSmallIntegerField(default=1, db_default=1)
    changes = models.JSONField(_("changes"), default=dict)
    search_text = models.TextField(blank=True)
    # v3: the record's own hash, taken at insert; the chain columns below are set once,
    # from NULL, when the record is linked after its commit (audit.chainer).
    # NULL, not "": "no hash yet" must differ from any value a hash could have.
    content_hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    chain_pos = models.BigIntegerField(null=True, blank=True, unique=True)
    prev_seq = models.BigIntegerField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001

    objects = AuditRecordManager()

    class Meta:
        verbose_name = _("audit record")
        verbose_name_plural = _("audit records")
        ordering = ("-seq",)
        indexes = [
            models.Index(fields=["customer_path", "-seq"], name="audit_scope_seq"),
            # ``customer_path`` included: a scoped page is read from the index alone.
            models.Index(
                fields=["actor_id", "-seq"], name="audit_actor_seq", include=["customer_path"]
            ),
            models.Index(
                fields=["actor_name", "-seq"], name="audit_actorname_seq", include=["customer_path"]
            ),
            models.Index(
                fields=["action", "-seq"], name="audit_action_seq", include=["customer_path"]
            ),
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
            # The unchained tail the chainer reads (a handful of rows).
            models.Index(
                fields=["seq"], name="audit_unchained", condition=models.Q(chain_pos__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.object_repr}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not kwargs.get("force_insert"):
            raise RuntimeError("audit records are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("audit records are append-only")

    def hashed_values(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in chain.hashed_fields(self.hash_version)}
        if self.hash_version >= 3:
            values.update({name: getattr(self, name) for name in chain.LINK_FIELDS})
        return values

    def build_search_text(self) -> str:
        # "Name <username>": PostgreSQL's parser drops "<username>" as a tag, so the brackets go.
        actor = self.actor_name.replace("<", " ").replace(">", " ")
        parts = [self.action, actor, self.object_type, self.object_repr, self.object_id]
        for side in ("before", "after"):
            for key, value in (self.changes.get(side) or {}).items():
                parts.append(f"{key} {value}")
        return " ".join(str(p) for p in parts if p)[:4000]


class AuditChainHead(models.Model):
    """The last chained record (position, number, hash): lets verification notice a removed
    last record. Written only by the chainer (audit.chainer), under its advisory lock."""

    last_seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=chain.GENESIS)
    last_pos = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"audit chain head at {self.last_seq}"


class AuditActorName(models.Model):
    """Every distinct ``actor_name`` of the records (a trigger adds new ones, migration
    0006): an actor search resolves its substring here, among a few hundred names, and
    then walks the ``(actor_name, seq)`` index of the names found."""

    name = models.CharField(max_length=310, primary_key=True)

    def __str__(self) -> str:
        return self.name
