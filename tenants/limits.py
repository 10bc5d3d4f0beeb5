"""Resource limits per customer: maximum domains, mailboxes, aliases and total quota.

A limit holds for the customer's whole subtree. Tenants owns the limit rows; the apps whose
objects are counted (mail) register a usage provider at start-up, so tenants never imports
them (see DESIGN.md's import rules).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _

from .escrow import reclaim

RESOURCES: tuple[str, ...] = (
    "domains", "mailboxes", "aliases", "quota_gb", "cloud_gb", "chat_users"
)  # fmt: skip
RESOURCE_LABELS = {
    "domains": _("domains"),
    "mailboxes": _("mailboxes"),
    "aliases": _("aliases"),
    "quota_gb": _("GB of total quota"),
    # Cloud files quota of the accounts (cloudfiles app's usage provider, in MB).
    "cloud_gb": _("GB of cloud files"),
    "chat_users": _("chat users"),
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
    audit_fields = (
        "max_domains", "max_mailboxes", "max_aliases", "max_quota_gb", "max_cloud_gb",
        "max_chat_users",
    )  # fmt: skip

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
    max_cloud_gb = models.PositiveIntegerField(_("maximum cloud files (GB)"), null=True, blank=True)
    # Counted by the chat app (Zulip users provisioned from the subtree's mailboxes).
    max_chat_users = models.PositiveIntegerField(_("maximum chat users"), null=True, blank=True)
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


_UNIT_MB = {
    "domains": 1, "mailboxes": 1, "aliases": 1, "quota_gb": 1024, "cloud_gb": 1024,
    "chat_users": 1,
}  # fmt: skip


def limit_exceeded_by_move(customer: Any, new_parent: Any, actor: Any = None) -> str | None:
    """Why moving ``customer``'s subtree under ``new_parent`` would break a limit, or None.

    Limits the subtree already counted against (common ancestors) do not change; only the
    limits set on the new parent and its ancestors above the branch point receive the
    moved usage. Rows are locked so two concurrent moves cannot both squeeze in.
    """
    targets = [
        row
        for row in ResourceLimit.objects.select_for_update()
        .filter(customer_id__in=[*new_parent.ancestor_ids, new_parent.pk])
        .select_related("customer")
        .order_by("customer_path")
        if not customer.path.startswith(row.customer_path)
    ]
    if not targets:
        return None
    # Creates below them consume escrow without these locks: take it back (see
    # tenants.escrow) so that the usage summed below is all that these limits carry.
    reclaim(row.customer_id for row in targets)
    moving = subtree_usage([customer.path])[customer.path]
    if not any(moving.values()):
        return None
    usage = subtree_usage([row.customer_path for row in targets])
    for row in targets:
        for resource in RESOURCES:
            cap = row.limit_of(resource)
            if cap is None or not moving.get(resource):
                continue
            used = usage[row.customer_path].get(resource, 0)
            if used + moving[resource] > cap * _UNIT_MB[resource]:
                unit = _UNIT_MB[resource]
                return _(
                    "Moving here would exceed the limit of %(cap)s %(resource)s set by "
                    "%(customer)s: %(used)s in use there, the moved customers hold %(moving)s."
                ) % {
                    "cap": cap,
                    "resource": RESOURCE_LABELS[resource],
                    "customer": _owner_label(row, actor),
                    "used": used // unit if unit > 1 else used,
                    "moving": -(-moving[resource] // unit) if unit > 1 else moving[resource],
                }
    return None


def _owner_label(row: ResourceLimit, actor: Any) -> str:
    """The name of the customer setting a limit, unless it is above the actor's scope."""
    actor_path = getattr(actor, "customer_path", None)
    if actor is None or (actor_path and row.customer_path.startswith(actor_path)):
        return f"“{row.customer.name}”"
    return str(_("a customer above yours"))
