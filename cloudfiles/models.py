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


class CloudAccount(models.Model):
    """One mailbox's Nextcloud account as UMS last saw it: the usage figures' source.

    ``active`` is the converge's result: set when a converge of the mailbox's cloud files
    node succeeded, true when that converge left the account existing and enabled (the
    effective "files" flag, the mailbox enabled, within the subtree's cloud limit: what
    :func:`cloudfiles.state.add_nextcloud` provisions). ``used_bytes`` is measured by the
    usage collection (one ``occ`` command per node, :mod:`cloudfiles.collect`). The daily
    snapshot sums both per customer with one GROUP BY.
    """

    scope_path_field = "customer_path"

    mailbox = models.OneToOneField(
        "mail.Mailbox", primary_key=True, on_delete=models.CASCADE, related_name="cloud_account"
    )
    customer = models.ForeignKey("tenants.Customer", on_delete=models.CASCADE, related_name="+")
    customer_path = models.CharField(max_length=1024, editable=False)
    active = models.BooleanField(default=False)
    used_bytes = models.BigIntegerField(default=0)
    # When the converge last recorded ``active`` / the collection last changed the bytes.
    converged_at = models.DateTimeField(null=True, blank=True)
    measured_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("cloud files account")
        verbose_name_plural = _("cloud files accounts")
        indexes = [models.Index(fields=["customer"], name="cloudfiles_account_customer")]

    def __str__(self) -> str:
        return f"cloud files account of mailbox {self.mailbox_id}"
