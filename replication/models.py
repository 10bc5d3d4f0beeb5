"""Replicas of domains on other IMAP nodes, the policy that asks for them, and the
fencing epoch of each domain.

A domain's *primary* is its :class:`deploy.models.DomainPlacement` (the node that serves
it); :class:`DomainReplica` rows are the other IMAP nodes that receive its dataset by
incremental ``zfs send`` (observed state of the last completed sync on each row).
:class:`DomainEpoch` counts the primary changes of a domain (failover, failback): every
change bumps it, and a node that was primary under an older epoch is *fenced* (its replica
row says so) until it has been resynced from the current primary.
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from mail.models import Domain
from servers.models import Node
from tenants.models import Customer


class ReplicationPolicy(models.Model):
    """How many replicas the domains of a customer (and its sub-tree) keep, where, how
    often they sync, the lag that raises an alert, and automatic failover."""

    scope_path_field = "customer_path"
    audit_fields = (
        "replicas",
        "zone_rule",
        "sync_interval_minutes",
        "max_lag_minutes",
        "auto_failover",
        "failover_delay_seconds",
    )
    SAME_ZONE, OTHER_ZONE, ANY_ZONE = "same", "other", "any"
    ZONE_RULES = (
        (SAME_ZONE, _("in the primary's zone")),
        (OTHER_ZONE, _("in another zone (HOT-WARM)")),
        (ANY_ZONE, _("in any zone")),
    )

    customer = models.OneToOneField(
        Customer, on_delete=models.CASCADE, related_name="replication_policy"
    )
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    replicas = models.PositiveSmallIntegerField(
        _("replicas per domain"), default=1, validators=[MaxValueValidator(3)]
    )
    zone_rule = models.CharField(
        _("replica zone"), max_length=8, choices=ZONE_RULES, default=ANY_ZONE
    )
    sync_interval_minutes = models.PositiveIntegerField(
        _("sync every (minutes)"),
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(1440)],
    )
    max_lag_minutes = models.PositiveIntegerField(
        _("alert when lag exceeds (minutes)"),
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(10080)],
    )
    auto_failover = models.BooleanField(_("fail over automatically"), default=False)
    #: How long the primary must have failed every liveness probe (a TCP connect to its
    #: SSH and service ports, :mod:`replication.autofailover`) before it is failed over;
    #: a blip shorter than this never fails over. 30 s: well over the longest restart of
    #: sshd or a daemon, and with the probe interval and the job still inside a minute.
    failover_delay_seconds = models.PositiveIntegerField(
        _("after the primary is offline for (seconds)"),
        default=30,
        validators=[MaxValueValidator(86400)],
    )

    class Meta:
        verbose_name = _("replication policy")

    def __str__(self) -> str:
        return f"replication policy of {self.customer}"

    @property
    def audit_customer(self) -> Customer:
        return self.customer


class DomainReplica(models.Model):
    """One replica of a domain's dataset on an IMAP node other than its primary."""

    scope_path_field = "customer_path"

    #: Waiting for its first (full) stream.
    NEW = "new"
    #: Received at least once; incrementals follow.
    SYNCED = "synced"
    #: This node was the primary before a failover: it must stop serving the domain and
    #: its diverged dataset is set aside before a full resync.
    FENCED = "fenced"
    STATES = ((NEW, _("initial copy")), (SYNCED, _("in sync")), (FENCED, _("fenced")))

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="replicas")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="domain_replicas")
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    state = models.CharField(max_length=8, choices=STATES, default=NEW)
    #: The epoch under which this node was fenced (FENCED rows only).
    fenced_epoch = models.PositiveIntegerField(null=True, blank=True)
    #: The primary's ``ums-sync-*`` snapshot this replica last received completely: the
    #: base of its next incremental (never destroyed on the primary while it is).
    last_snapshot = models.CharField(max_length=100, blank=True)
    #: When that snapshot was taken on the primary: mail acknowledged before it is on
    #: the replica. The replication lag is now minus this.
    synced_at = models.DateTimeField(null=True, blank=True)
    bytes_sent = models.BigIntegerField(default=0)
    last_error = models.TextField(blank=True)
    lag_alerted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("domain replica")
        ordering = ("domain__name", "node__hostname")
        constraints = [
            models.UniqueConstraint(fields=["domain", "node"], name="replica_domain_node")
        ]

    def __str__(self) -> str:
        return f"{self.domain} on {self.node}"

    @property
    def audit_customer(self) -> Customer:
        return self.domain.customer


class DomainEpoch(models.Model):
    """The fencing generation of a domain: bumped by every failover and failback."""

    domain = models.OneToOneField(
        Domain, on_delete=models.CASCADE, primary_key=True, related_name="epoch"
    )
    epoch = models.PositiveIntegerField(default=0)
    changed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.domain_id}: epoch {self.epoch}"


class PrimaryProbe(models.Model):
    """The liveness probe's view of one primary (of a mail domain with automatic failover,
    or of a zone's cloud database with it): since when every probe failed, how many in a
    row. One answered probe resets it."""

    node = models.OneToOneField(
        Node, on_delete=models.CASCADE, primary_key=True, related_name="failover_probe"
    )
    #: The first failed probe of the current run of failures (None: the last answered).
    failing_since = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0)
    checked_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"probe of {self.node_id}: {self.failures} failures"
