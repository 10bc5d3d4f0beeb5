"""The signing key an operator trusts for one SpamAssassin update channel (GPG)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class RuleChannelKey(models.Model):
    """``public_key``: the ASCII-armoured key as given (checked with ``gpg --show-keys``);
    ``fingerprints``: the primary and signing-capable subkey fingerprints read from it,
    the ids ``sa-update --gpgkey`` trusts (narrowed to ``key_id`` when one was given)."""

    channel = models.CharField(max_length=253, unique=True)
    public_key = models.TextField()
    key_id = models.CharField(max_length=40, blank=True)
    fingerprints = models.JSONField(default=list)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        app_label = "deploy"
        ordering = ("channel",)

    def __str__(self) -> str:
        return f"{self.channel}: {', '.join(self.fingerprints)}"
