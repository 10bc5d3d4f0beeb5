"""Jobs: long work (node changes, bulk imports, bulk releases) tracked for the portal and API.

The model lives in the machinery package, not in ``deploy``, because several apps start jobs
and ``mail`` may not import ``deploy`` (see DESIGN.md's import rules).
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Job(models.Model):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STATUS_CHOICES = [
        (PENDING, _("Pending")),
        (RUNNING, _("Running")),
        (SUCCEEDED, _("Succeeded")),
        (FAILED, _("Failed")),
        (CANCELLED, _("Cancelled")),
    ]
    FINISHED = (SUCCEEDED, FAILED, CANCELLED)

    scope_path_field = "customer_path"

    kind = models.CharField(_("kind"), max_length=64, db_index=True)
    title = models.CharField(_("title"), max_length=200)
    status = models.CharField(_("status"), max_length=10, choices=STATUS_CHOICES, default=PENDING)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    customer_id = models.BigIntegerField(null=True, blank=True)
    customer_path = models.CharField(max_length=1000)
    requested_by_id = models.BigIntegerField(null=True, blank=True)
    requested_by_name = models.CharField(max_length=310, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    #: Claims so far; also the fencing token of the current run (see ums.jobs).
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: ``host:pid`` of the process running it, so a redelivered task can tell that the
    #: previous run's process is gone and resume at once (see ums.jobs._claim).
    owner = models.CharField(max_length=200, blank=True)
    #: A pending job not claimed by then is dispatched again by the reconciler (lost
    #: message, or a retry after its worker died, with backoff).
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        ordering = ("-id",)
        indexes = [
            models.Index(fields=["customer_path", "-id"], name="job_scope_id"),
            models.Index(fields=["status", "kind"], name="job_status_kind"),
            # The reconciler's only query: tiny however many finished jobs there are.
            models.Index(
                fields=["status", "next_attempt_at", "heartbeat_at"],
                name="job_unfinished",
                condition=models.Q(status__in=("pending", "running")),
            ),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def percent(self) -> int:
        if self.status == self.SUCCEEDED:
            return 100
        if not self.progress_total:
            return 0
        return min(100, int(100 * self.progress_done / self.progress_total))

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or self.heartbeat_at or self.started_at
        return (end - self.started_at).total_seconds()


class Outbox(models.Model):
    """An intent written in the user's transaction, consumed after commit (and again by the
    reconciler if that was lost): append-only, so writing it never serialises two
    administrators' transactions on one hot row.

    ``topic`` names the consumer (``mail.changed``: deploy turns it into converges of the
    nodes serving ``customer_path``); ``payload`` is plain JSON for it.
    """

    topic = models.CharField(max_length=64)
    customer_path = models.CharField(max_length=1000)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["created_at"],
                name="outbox_unprocessed",
                condition=models.Q(processed_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.topic} {self.customer_path} #{self.pk}"
