"""The cloud database (Nextcloud's MariaDB) of each zone: which cloud DB node is its
primary, the fencing epoch, and what each member node was last seen doing.

One :class:`CloudDbCluster` per zone that has cloud DB nodes. Its ``epoch`` counts the
primary changes (failovers) like :class:`replication.models.DomainEpoch` does for a mail
domain: a member that was primary under an older epoch is FENCED (read-only, its data set
aside and re-seeded) before it replicates again. Rows of :class:`CloudDbMember` hold the
observed state the reconciler measured on each node (GTID positions, lag).
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from servers.models import Node, Zone
from ums.crypto import EncryptedTextField


class CloudDbCluster(models.Model):
    scope_path_field = "customer_path"

    zone = models.OneToOneField(Zone, on_delete=models.CASCADE, related_name="clouddb")
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    primary = models.ForeignKey(
        Node, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    epoch = models.PositiveIntegerField(default=0)
    changed_at = models.DateTimeField(null=True, blank=True)
    #: The replication account's password (generated; Fernet-encrypted at rest).
    repl_password = EncryptedTextField(blank=True)
    #: A reconciler pass holds the cluster until then (renewed while it works): a
    #: second pass skips it rather than seed the same node twice at once.
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name = _("cloud database")

    def __str__(self) -> str:
        return f"cloud database of {self.zone}"


class CloudDbMember(models.Model):
    scope_path_field = "customer_path"

    PRIMARY, NEW, SEEDING, REPLICA, FENCED = "primary", "new", "seeding", "replica", "fenced"
    STATES = (
        (PRIMARY, _("primary")),
        (NEW, _("waiting for its copy")),
        (SEEDING, _("initial copy")),
        (REPLICA, _("replicating")),
        (FENCED, _("fenced")),
    )

    cluster = models.ForeignKey(CloudDbCluster, on_delete=models.CASCADE, related_name="members")
    node = models.OneToOneField(Node, on_delete=models.CASCADE, related_name="clouddb_member")
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    state = models.CharField(max_length=8, choices=STATES, default=NEW)
    fenced_epoch = models.PositiveIntegerField(null=True, blank=True)
    #: Measured on the node by the last reconciler pass that reached it.
    gtid_pos = models.CharField(max_length=500, blank=True)
    seconds_behind = models.PositiveIntegerField(null=True, blank=True)
    transactions_behind = models.PositiveIntegerField(null=True, blank=True)
    replicating = models.BooleanField(default=False)
    read_only = models.BooleanField(null=True)
    measured_at = models.DateTimeField(null=True, blank=True)
    seeded_at = models.DateTimeField(null=True, blank=True)
    seed_bytes = models.BigIntegerField(default=0)
    aside = models.CharField(max_length=300, blank=True)
    last_error = models.TextField(blank=True)
    lag_alerted = models.BooleanField(default=False)

    class Meta:
        verbose_name = _("cloud database member")
        ordering = ("cluster_id", "node__hostname")

    def __str__(self) -> str:
        return f"{self.node} ({self.state})"
