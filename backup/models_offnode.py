"""Off-node copies: where each IMAP node's mail store is copied, and what the copies hold.

:class:`OffnodeSetting` is the administrator's choice per IMAP node (mail store): a backup
node and/or a target, how often, how much the target keeps. It is scoped like the node
(the node's customer path) and changed with the servers permissions.

:class:`OffnodeCopy` is observed state, one row per domain and destination: what the last
successful run left there (the copy's newest snapshot), for listings, the rebuild of a
lost node and permanent deletion.
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from mail.models import Domain
from servers.models import Node

from .models import BackupTarget


class OffnodeSetting(models.Model):
    """Off-node copies of one IMAP node's domain datasets."""

    scope_path_field = "customer_path"
    audit_fields = (
        "enabled",
        "backup_node",
        "backup_dataset",
        "target",
        "interval_minutes",
        "target_full_every",
        "target_keep_chains",
        "target_format",
        "archive_full_every",
        "verify_every_days",
    )
    STREAM, MAILDIR = "stream", "maildir"
    FORMATS = (
        (STREAM, _("zfs send streams (the whole dataset; a lost node comes back from them)")),
        (MAILDIR, _("Maildir archives (leave out excluded mailboxes and folders)")),
    )

    node = models.OneToOneField(
        Node, on_delete=models.CASCADE, related_name="offnode_setting", verbose_name=_("node")
    )
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    enabled = models.BooleanField(_("copies enabled"), default=True)
    backup_node = models.ForeignKey(
        Node,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("backup node"),
    )
    backup_dataset = models.CharField(
        _("dataset on the backup node"), max_length=200, blank=True, default=""
    )
    target = models.ForeignKey(
        BackupTarget,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("backup target"),
    )
    interval_minutes = models.PositiveIntegerField(
        _("copy every (minutes)"),
        default=60,
        validators=[MinValueValidator(5), MaxValueValidator(7 * 24 * 60)],
    )
    target_full_every = models.PositiveIntegerField(
        _("incrementals before a new full copy on the target"),
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
    )
    target_keep_chains = models.PositiveIntegerField(
        _("full copies kept on the target"),
        default=2,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
    )
    #: What goes to the target: ``zfs send`` streams, or Maildir tar archives filtered by
    #: the exclusion policies (:mod:`backup.offnode_archive`). The backup node always
    #: receives streams.
    target_format = models.CharField(
        _("what is stored on the target"), max_length=8, choices=FORMATS, default=STREAM
    )
    #: Maildir archives: a full archive every this many passes, increments in between
    #: (:mod:`backup.archive_chain`); 1: every archive full. ``target_keep_chains``
    #: counts these chains, each kept or deleted whole.
    archive_full_every = models.PositiveIntegerField(
        _("a full Maildir archive every (passes)"),
        default=7,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
    )
    #: Re-read every object of the target's copies this often (``backup.offnode_verify``):
    #: a copy proven readable before the day it is needed; 0: only on request.
    verify_every_days = models.PositiveIntegerField(
        _("verify the target's copies every (days)"),
        default=7,
        validators=[MaxValueValidator(365)],
    )
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_ok = models.BooleanField(null=True, editable=False)
    last_message = models.CharField(max_length=1000, blank=True, editable=False)

    class Meta:
        verbose_name = _("off-node copy setting")
        verbose_name_plural = _("off-node copy settings")

    def __str__(self) -> str:
        return f"off-node copies of {self.node}"

    @property
    def audit_customer(self) -> object:
        return self.node.customer


class OffnodeCopy(models.Model):
    """A domain's copy on a backup node (a dataset) or a target (a manifest's chains)."""

    scope_path_field = "customer_path"
    NODE, TARGET, ARCHIVE = "node", "target", "archive"
    KINDS = (
        (NODE, _("backup node")),
        (TARGET, _("backup target")),
        (ARCHIVE, _("Maildir archives on a backup target")),
    )

    domain = models.ForeignKey(
        Domain, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    domain_name = models.CharField(max_length=253)
    customer_path = models.CharField(max_length=1000, db_index=True)
    kind = models.CharField(max_length=8, choices=KINDS)
    source_node = models.ForeignKey(
        Node, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    backup_node = models.ForeignKey(
        Node, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    target = models.ForeignKey(
        BackupTarget, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    #: The dataset on the backup node, or the manifest's object name on the target.
    #: For archives, ``snapshots`` lists the snapshot each kept archive was made from.
    location = models.CharField(max_length=500)
    snapshots = models.JSONField(default=list)
    last_snapshot = models.CharField(max_length=100)
    bytes_sent = models.BigIntegerField(default=0)
    #: Archives only: what the newest archive left out by the exclusion policies,
    #: ``{"mailboxes": [...], "folders": [...]}`` (streams leave nothing out: ``{}``).
    left_out = models.JSONField(default=dict, blank=True)
    #: Archives only: what each kept archive holds, from its manifest entry,
    #: ``{snapshot: {mailbox: [folder, ...]}}``, so restore forms offer and check the
    #: mailboxes and folders without reading the target in the request. ``{}`` for
    #: archives written before folders were recorded (then nothing is checked).
    members = models.JSONField(default=dict, blank=True)
    #: Archives only: ``{snapshot: "full" | "incremental"}`` of each kept archive (an
    #: increment is read with its chain: backup/archive_chain.py); ``{}`` for others.
    archive_kinds = models.JSONField(default=dict, blank=True)
    #: Backup-node copies only: ``{snapshot: guid}`` of each kept snapshot as the copy pass
    #: listed it after receiving, so verification can tell the snapshot it finds is the one
    #: received (a name can be re-created; a GUID cannot). ``{}`` for copies recorded
    #: before (then only existence and readability are checked).
    guids = models.JSONField(default=dict, blank=True)
    copied_at = models.DateTimeField()
    #: The last verification of a copy on a target (every object downloaded, decrypted and
    #: checked against the manifest; ``backup.offnode_verify``): when, whether it passed,
    #: and the error naming the object when it did not. Never verified: ``None``.
    verified_at = models.DateTimeField(null=True, blank=True)
    verify_ok = models.BooleanField(null=True, blank=True)
    verify_message = models.CharField(max_length=1000, blank=True, default="")

    class Meta:
        ordering = ("domain_name", "kind", "id")
        constraints = [
            models.UniqueConstraint(
                "domain_name",
                "kind",
                "backup_node",
                "target",
                name="backup_offnode_copy_unique",
                nulls_distinct=False,
            )
        ]

    def __str__(self) -> str:
        return f"{self.domain_name} {self.kind} {self.location}@{self.last_snapshot}"
