"""Resource limits per customer: maximum domains, mailboxes, aliases and total quota.

A limit holds for the customer's whole subtree. Tenants owns the limit rows; the apps whose
objects are counted (mail) register a usage provider at start-up, so tenants never imports
them (see DESIGN.md's import rules).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.db import models
from django.utils.translation import gettext_lazy as _

RESOURCES: tuple[str, ...] = ("domains", "mailboxes", "aliases", "quota_gb")
RESOURCE_LABELS = {
    "domains": _("domains"),
    "mailboxes": _("mailboxes"),
    "aliases": _("aliases"),
    "quota_gb": _("GB of total quota"),
}
MAX_LIMIT = 2_000_000_000

# provider(paths) -> {path: {resource: subtree usage}}; usage of quota is in MB.
UsageProvider = Callable[[Iterable[str]], dict[str, dict[str, int]]]
_providers: list[UsageProvider] = []


def register_usage_provider(provider: UsageProvider) -> None:
    if provider not in _providers:
        _providers.append(provider)


def subtree_usage(paths: Iterable[str]) -> dict[str, dict[str, int]]:
    """Usage of each subtree in ``paths`` as reported by every registered provider."""
    wanted = list(dict.fromkeys(paths))
    totals: dict[str, dict[str, int]] = {p: dict.fromkeys(RESOURCES, 0) for p in wanted}
    for provider in _providers:
        for path, usage in provider(wanted).items():
            for key, value in usage.items():
                totals.setdefault(path, dict.fromkeys(RESOURCES, 0))[key] = (
                    totals[path].get(key, 0) + value
                )
    return totals


class ResourceLimit(models.Model):
    """The limits a customer's subtree must stay within; an empty value means unlimited."""

    scope_path_field = "customer_path"
    audit_fields = ("max_domains", "max_mailboxes", "max_aliases", "max_quota_gb")

    customer = models.OneToOneField(
        "tenants.Customer",
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="resource_limit",
        verbose_name=_("customer"),
    )
    customer_path = models.CharField(max_length=1000, editable=False)
    max_domains = models.PositiveIntegerField(_("maximum domains"), null=True, blank=True)
    max_mailboxes = models.PositiveIntegerField(_("maximum mailboxes"), null=True, blank=True)
    max_aliases = models.PositiveIntegerField(_("maximum aliases"), null=True, blank=True)
    max_quota_gb = models.PositiveIntegerField(_("maximum total quota (GB)"), null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "tenants"
        verbose_name = _("resource limit")
        verbose_name_plural = _("resource limits")
        ordering = ("customer_path",)

    def __str__(self) -> str:
        return f"limits of customer {self.customer_id}"

    @property
    def audit_customer(self) -> models.Model:
        return self.customer

    def limit_of(self, resource: str) -> int | None:
        return getattr(self, f"max_{resource}")
