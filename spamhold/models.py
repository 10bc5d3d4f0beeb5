"""Held mail: one row per message in an SMTP node's Postfix hold queue, and its outcome.

A row is created once by ingestion (``spamhold.ingest``), keyed by node and Postfix queue
id (nodes run with ``enable_long_queue_ids``, so an id is never reused on a node), and
then moves exactly once from ``ONHOLD`` to one outcome.

An outcome is first a durable :class:`OutcomeIntent` (release, delete, expire), written in
the requesting administrator's transaction: the message's row points at it (``intent``)
while its ``status`` stays ``ONHOLD``, because that is what the node still has. The claim
is a conditional UPDATE (``status = ONHOLD AND intent IS NULL``), so of two administrators
acting on the same message one wins and the other is told who asked first. Only when the
node confirms (the id left the hold queue through our command) does ``status`` become the
outcome; a pending row is shown as "Releasing…" / "Deleting…" meanwhile.

Everything that came from the message (addresses, subject, reason details) is untrusted
text: stored as-is, always rendered escaped.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from tenants.models import Customer

PATH_MAX = 1000


class Status(models.TextChoices):
    """The sheet's ``status`` values (``ONHOLD`` as written) and the outcomes."""

    ONHOLD = "ONHOLD", _("On hold")
    RELEASED = "RELEASED", _("Released")
    DELETED = "DELETED", _("Deleted")
    EXPIRED = "EXPIRED", _("Expired")
    # Left the hold queue by other means (released or deleted on the node by hand).
    GONE = "GONE", _("Left the queue")


class Reason(models.TextChoices):
    SPAM = "spam", _("Spam score")
    VIRUS = "virus", _("Virus")
    ATTACHMENT = "attachment", _("Blocked attachment")
    SENDER = "sender", _("Blocked sender")
    HEADER = "header", _("Header rule")
    DMARC = "dmarc", _("Failed DMARC")
    OTHER = "other", _("Other")


class Outcome(models.TextChoices):
    RELEASE = "release", _("Release")
    RELEASE_ALLOW = "release_allow", _("Release and allow the sender")
    DELETE = "delete", _("Delete")
    DELETE_BLOCK = "delete_block", _("Delete and block the sender")
    EXPIRE = "expire", _("Expire")


class HeldMessage(models.Model):
    scope_path_field = "customer_path"

    node = models.ForeignKey(
        "servers.Node",
        on_delete=models.SET_NULL,
        null=True,
        related_name="held_messages",
        verbose_name=_("node"),
    )
    # Kept when the node is decommissioned, so history stays readable.
    node_name = models.CharField(_("node name"), max_length=255)
    queue_id = models.CharField(_("queue id"), max_length=64)
    # The customer owning the (first) recipient domain; None when no hosted domain matched
    # (only root administrators see those).
    customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, null=True, related_name="+", verbose_name=_("customer")
    )
    customer_path = models.CharField(max_length=PATH_MAX, editable=False)

    received_at = models.DateTimeField(_("received"))
    sender = models.CharField(_("sender"), max_length=320, blank=True)
    sender_domain = models.CharField(_("sender domain"), max_length=255, blank=True)
    recipients = models.JSONField(_("recipients"), default=list)
    recipient = models.CharField(_("recipient"), max_length=320, blank=True)  # the first
    recipient_domain = models.CharField(_("recipient domain"), max_length=255, blank=True)
    subject = models.TextField(_("subject"), blank=True)
    size = models.BigIntegerField(_("size (bytes)"), default=0)

    reason = models.CharField(
        _("reason"), max_length=16, choices=Reason.choices, default=Reason.OTHER
    )
    reason_detail = models.TextField(_("reason detail"), blank=True)
    spam_score = models.DecimalField(
        _("spam score"), max_digits=8, decimal_places=2, null=True, blank=True
    )
    spam_rules = models.JSONField(_("spam rules"), default=list, blank=True)
    virus_name = models.CharField(_("virus"), max_length=255, blank=True)
    attachment_name = models.CharField(_("blocked attachment"), max_length=255, blank=True)

    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.ONHOLD
    )
    expires_at = models.DateTimeField(_("expires"))
    first_seen_at = models.DateTimeField(_("first seen"), auto_now_add=True)
    last_seen_at = models.DateTimeField(_("last seen"), auto_now_add=True)

    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices, blank=True)
    handled_at = models.DateTimeField(_("handled"), null=True, blank=True)
    handled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("handled by"),
    )
    handled_by_name = models.CharField(_("handled by"), max_length=255, blank=True)
    # A node command that failed after the outcome was claimed (retried by the next run).
    node_error = models.TextField(_("node error"), blank=True)
    # The outcome requested for this message and not yet confirmed by the node (None once
    # the request is settled or given up; kept on settled rows as the request that did it).
    intent = models.ForeignKey(
        "OutcomeIntent",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="messages",
        verbose_name=_("request"),
    )

    class Meta:
        verbose_name = _("held message")
        verbose_name_plural = _("held messages")
        constraints = [
            models.UniqueConstraint(fields=["node", "queue_id"], name="spamhold_node_queue_id"),
        ]
        indexes = [
            # The sheet's query: one sender domain, one status, a time range, newest first.
            models.Index(
                fields=["sender_domain", "status", "-received_at", "-id"],
                name="spamhold_sender_status",
            ),
            models.Index(
                fields=["customer_path", "status", "-received_at", "-id"],
                name="spamhold_scope_status",
            ),
            models.Index(
                fields=["recipient_domain", "status", "-received_at", "-id"],
                name="spamhold_rcpt_status",
            ),
            # The portal's default view: everything on hold in scope, newest first.
            models.Index(fields=["status", "-received_at", "-id"], name="spamhold_status_recent"),
            models.Index(fields=["status", "expires_at"], name="spamhold_expiry"),
        ]

    def __str__(self) -> str:
        return f"{self.queue_id} from {self.sender or '<>'}"

    @property
    def pending(self) -> str:
        """The requested outcome the node has not confirmed yet ("" when none)."""
        return self.outcome if self.status == Status.ONHOLD else ""

    @property
    def audit_customer(self) -> Customer | None:
        return self.customer


class HoldRetention(models.Model):
    """How many days a customer's held mail is kept before it expires.

    Inherited down the customer tree: a customer without a row takes the nearest
    ancestor's, and the tree's root without one takes ``UMS_SPAMHOLD_RETENTION_DAYS``.
    """

    scope_path_field = "customer_path"
    audit_fields = ("days",)

    customer = models.OneToOneField(
        Customer,
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="hold_retention",
        verbose_name=_("customer"),
    )
    customer_path = models.CharField(max_length=PATH_MAX, editable=False, db_index=True)
    days = models.PositiveIntegerField(_("days kept on hold"))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("hold retention")
        verbose_name_plural = _("hold retentions")

    def __str__(self) -> str:
        return f"hold retention of customer {self.customer_id}: {self.days} days"

    @property
    def audit_customer(self) -> Customer:
        return self.customer


class IntentState(models.TextChoices):
    REQUESTED = "requested", _("Requested")
    APPLYING = "applying", _("Applying")
    RETRYING = "retrying", _("Retrying")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")


PENDING_STATES = (IntentState.REQUESTED, IntentState.APPLYING, IntentState.RETRYING)


class OutcomeIntent(models.Model):
    """One requested outcome (release, delete, expire) of a set of held messages.

    Written in the requester's transaction, with the messages it claimed (or, for "every
    message matching a filter", the filter: its job claims the matches). A job applies it
    on the nodes under a short lease (``lease_owner`` until ``next_attempt_at``, renewed per
    batch);
    the reconciler (``spamhold.reconcile``) re-drives it when the lease ran out or a retry
    is due, with backoff, and gives up after ``UMS_SPAMHOLD_INTENT_MAX_ATTEMPTS`` with the
    reason in ``error``. ``token`` names its marker file on the nodes, so a retry can tell
    "we released it" from "it left by other means".

    State machine: requested -> applying -> done | retrying -> applying ... | failed.
    """

    scope_path_field = "customer_path"

    token = models.CharField(max_length=32, unique=True)
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices)
    state = models.CharField(
        _("state"), max_length=10, choices=IntentState.choices, default=IntentState.REQUESTED
    )
    customer_path = models.CharField(max_length=PATH_MAX)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    requested_by_name = models.CharField(_("requested by"), max_length=255, blank=True)
    requested_at = models.DateTimeField(_("requested"))
    # "Everything matching": the filters as stored by the API/portal and the highest id
    # they may reach; None for a list of ids (claimed at once).
    filters = models.JSONField(null=True, blank=True)
    max_id = models.BigIntegerField(null=True, blank=True)
    claimed_all = models.BooleanField(default=True)
    job_id = models.BigIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The job applying it now; while ``state`` is applying, ``next_attempt_at`` is when
    # its lease runs out (renewed per batch).
    lease_owner = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    result = models.JSONField(default=dict, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("held-mail request")
        verbose_name_plural = _("held-mail requests")
        indexes = [
            # The reconciler's one query: pending intents only (a handful), whatever the
            # number of finished ones.
            models.Index(
                fields=["next_attempt_at"],
                name="spamhold_intent_pending",
                condition=models.Q(state__in=["requested", "applying", "retrying"]),
            ),
            models.Index(fields=["customer_path", "state", "-id"], name="spamhold_intent_scope"),
        ]

    def __str__(self) -> str:
        return f"{self.outcome} request {self.pk}"

    @property
    def is_pending(self) -> bool:
        return self.state in PENDING_STATES


class IdempotencyKey(models.Model):
    """An API caller's key for a release/delete request, and the answer it got.

    ``status_code`` 0 means "in progress since ``started_at``": a retry after
    ``STALE_SECONDS`` runs the request again (safe: outcome claims are conditional), so a
    request that died mid-way does not answer 409 forever. Keys expire after a day.
    """

    STALE_SECONDS = 60
    KEEP_HOURS = 24

    administrator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    key = models.CharField(max_length=128)
    request_hash = models.CharField(max_length=64)
    response = models.JSONField(default=dict)
    status_code = models.PositiveSmallIntegerField(default=200)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["administrator", "key"], name="spamhold_idempotency_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.administrator_id}:{self.key}"
