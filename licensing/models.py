"""Installed licences: the signed text as received, newest last.

Only the text is stored; whether it is valid is decided again each time it is read
(:mod:`licensing.state`), so a row edited in the database is refused, never trusted.
Earlier rows stay as the installation's licence history.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class InstalledLicence(models.Model):
    text = models.TextField(_("licence text"))
    licence_id = models.CharField(_("licence id"), max_length=64)
    installed_at = models.DateTimeField(_("installed"), auto_now_add=True)
    installed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("installed by"),
    )

    class Meta:
        verbose_name = _("installed licence")
        verbose_name_plural = _("installed licences")
        ordering = ("-id",)

    def __str__(self) -> str:
        return self.licence_id
