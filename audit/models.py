"""Audit records and the head of their hash chain."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import chain


class AuditRecordManager(models.Manager):
    def append(self, *, actor: Any, **values: Any) -> AuditRecord:
        """Append a record at the end of the chain.

        The chain head row is locked for the rest of the caller's transaction: records are
        numbered without gaps in commit order, so a missing number means a deleted record.
        """
        with transaction.atomic():
            head, _created = AuditChainHead.objects.select_for_update().get_or_create(
                pk=1, defaults={"last_seq": 0, "last_hash": chain.GENESIS}
            )
            record = AuditRecord(
                seq=head.last_seq + 1,
                timestamp=timezone.now(),
                actor_id=getattr(actor, "pk", None),
                prev_hash=head.last_hash,
                search_text="",
                **values,
            )
            record.search_text = record.build_search_text()
            record.hash = chain.compute_hash(head.last_hash, record.hashed_values())
            record.save(force_insert=True)
            head.last_seq, head.last_hash = record.seq, record.hash
            head.save(update_fields=["last_seq", "last_hash"])
        return record


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
    customer_path = models.CharField(max_length=1000, blank=True)
    changes = models.JSONField(_("changes"), default=dict)
    search_text = models.TextField(blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = AuditRecordManager()

    class Meta:
        verbose_name = _("audit record")
        verbose_name_plural = _("audit records")
        ordering = ("-seq",)
        indexes = [
            models.Index(fields=["customer_path", "-seq"], name="audit_scope_seq"),
            models.Index(fields=["actor_id", "-seq"], name="audit_actor_seq"),
            models.Index(fields=["action", "-seq"], name="audit_action_seq"),
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
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
        return {name: getattr(self, name) for name in chain.HASHED_FIELDS}

    def build_search_text(self) -> str:
        # "Name <username>": PostgreSQL's parser drops "<username>" as a tag, so the brackets go.
        actor = self.actor_name.replace("<", " ").replace(">", " ")
        parts = [self.action, actor, self.object_type, self.object_repr, self.object_id]
        for side in ("before", "after"):
            for key, value in (self.changes.get(side) or {}).items():
                parts.append(f"{key} {value}")
        return " ".join(str(p) for p in parts if p)[:4000]


class AuditChainHead(models.Model):
    """The last sequence number and hash: lets verification notice a removed last record."""

    last_seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=chain.GENESIS)

    def __str__(self) -> str:
        return f"audit chain head at {self.last_seq}"
