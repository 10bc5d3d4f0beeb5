"""The controller's SSH key pairs (private halves encrypted at rest)."""

from __future__ import annotations

from django.db import models

from ums.crypto import EncryptedTextField


class ControllerKey(models.Model):
    """One version of the controller's SSH key pair; the newest unretired one is current."""

    version = models.PositiveIntegerField(unique=True)
    private_key_pem = EncryptedTextField()
    public_key = models.TextField()
    fingerprint = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-version",)

    def __str__(self) -> str:
        return f"controller key v{self.version} ({self.fingerprint})"


class DomainPlacement(models.Model):
    """Which IMAP node holds a mail domain's mailboxes (see :mod:`deploy.placement`).

    Kept in ``deploy`` so ``mail`` knows nothing of nodes (DESIGN.md import rules). Sticky:
    once placed, a domain's mail stays on its node; moving it means moving the mail, which
    converge never does on its own.
    """

    # Deleting the domain deletes its placement (the node keeps the data: its dataset is
    # then an orphan in the converge result, never destroyed by converge).
    domain = models.OneToOneField(
        "mail.Domain", on_delete=models.CASCADE, primary_key=True, related_name="placement"
    )
    # A node row is never deleted in normal operation (it is decommissioned); if it is, its
    # domains are placed again on the next converge rather than left undeliverable.
    node = models.ForeignKey(
        "servers.Node", on_delete=models.CASCADE, related_name="domain_placements"
    )
    placed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"domain {self.domain_id} on node {self.node_id}"


class NodeConvergeState(models.Model):
    """A node's converge intent and lease, in PostgreSQL (see :mod:`deploy.dirty`).

    ``desired_generation`` is bumped whenever something the node serves changes;
    ``applied_generation`` is the generation the last *successful* converge read at its
    start. The node is dirty while desired > applied, whatever happened to the workers.
    The lease (``lease_owner``, ``lease_token``, ``lease_expires_at``) lets one converge
    run per node; the heartbeat of its job renews it, so a dead worker's lease lapses in
    seconds, and ``lease_token`` (incremented by every acquisition) fences writes of a
    converge that was given up for dead.
    """

    node = models.OneToOneField(
        "servers.Node", on_delete=models.CASCADE, primary_key=True, related_name="converge_state"
    )
    desired_generation = models.BigIntegerField(default=0)
    applied_generation = models.BigIntegerField(default=0)
    #: Why the last generation was asked for (shown with the node).
    reason = models.CharField(max_length=200, blank=True)
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_token = models.BigIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    #: The generation the lease holder read at its start (applied if it succeeds).
    running_generation = models.BigIntegerField(default=0)
    #: The converge job queued for the node and not started yet (changes coalesce into it).
    queued_job_id = models.BigIntegerField(null=True, blank=True)
    #: Failed converges in a row; the next is due at ``next_attempt_at`` (backoff).
    failures = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The reconciler's query: only dirty nodes are in it.
            models.Index(
                fields=["next_attempt_at"],
                name="converge_dirty",
                condition=models.Q(desired_generation__gt=models.F("applied_generation")),
            )
        ]

    def __str__(self) -> str:
        return (
            f"node {self.node_id}: generation {self.applied_generation}/{self.desired_generation}"
        )

    @property
    def dirty(self) -> bool:
        return self.desired_generation > self.applied_generation


from .certificate_models import AcmeAccount, LbCertificate  # noqa: E402,F401 (ACME, issue 15)
from .rule_key_models import RuleChannelKey  # noqa: E402,F401 (GPG channel keys, issue 15)
