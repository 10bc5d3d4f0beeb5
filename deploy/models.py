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
