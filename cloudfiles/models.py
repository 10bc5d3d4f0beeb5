"""A customer's cloud files policy: sharing rules and the per-user quota.

Every field may be empty: the level then inherits from its parent customer, up to the
product defaults (:data:`cloudfiles.policy.DEFAULTS`), as mail's protocol access does.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class FilesPolicy(models.Model):
    scope_path_field = "customer_path"
    audit_fields = (
        "internal_shares",
        "external_links",
        "password_required",
        "expire_days",
        "quota_mb",
    )

    customer = models.OneToOneField(
        "tenants.Customer",
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="files_policy",
        verbose_name=_("customer"),
    )
    customer_path = models.CharField(max_length=1024, db_index=True, editable=False)
    internal_shares = models.BooleanField(_("sharing with colleagues"), null=True, blank=True)
    external_links = models.BooleanField(_("external links"), null=True, blank=True)
    password_required = models.BooleanField(
        _("external links need a password"), null=True, blank=True
    )
    expire_days = models.PositiveSmallIntegerField(
        _("external links expire after (days)"), null=True, blank=True
    )
    quota_mb = models.PositiveIntegerField(_("cloud quota per user (MB)"), null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("cloud files policy")
        verbose_name_plural = _("cloud files policies")

    def __str__(self) -> str:
        return str(self.customer)

    @property
    def audit_customer(self) -> object:
        return self.customer
