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
