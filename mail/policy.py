"""Inheritance of protocol access and filtering policy, with where each value comes from.

Protocol access: the built-in default, then each customer from the root down to the
domain's customer, then the domain, then the mailbox; the last level that says allow or
deny wins. Filtering policy: the same chain without the mailbox; the last level that sets a
field wins (lists are replaced as a whole, not merged, so a level states exactly what holds).
Each resolver reads the policies of a whole chain in one query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tenants.models import Customer

from . import choices
from .models import CustomerPolicy, Domain, DomainPolicy, Mailbox


@dataclass(frozen=True)
class Source:
    level: str  # "default", "customer", "domain" or "mailbox"
    id: int | None = None
    name: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "id": self.id, "name": self.name}


DEFAULT_SOURCE = Source(choices.SOURCE_DEFAULT)


def customer_chain(customer: Customer) -> list[tuple[Customer | None, CustomerPolicy | None]]:
    """(customer, its policy or None) from the root down to ``customer``; two queries."""
    customers = list(Customer.objects.filter(path__in=customer.ancestor_paths).order_by("depth"))
    policies = {
        p.customer_id: p
        for p in CustomerPolicy.objects.filter(customer__in=[c.pk for c in customers])
    }
    return [(c, policies.get(c.pk)) for c in customers]


def _levels(
    customer: Customer, domain: Domain | None, mailbox: Mailbox | None
) -> list[tuple[Source, dict[str, Any] | None, Any]]:
    """(source, protocol_access, policy object) per level, top first."""
    levels: list[tuple[Source, dict[str, Any] | None, Any]] = []
    for cust, policy in customer_chain(customer):
        source = Source(choices.SOURCE_CUSTOMER, cust.pk, cust.name)
        levels.append((source, policy.protocol_access if policy else None, policy))
    if domain is not None:
        policy = DomainPolicy.objects.filter(pk=domain.pk).first()
        source = Source(choices.SOURCE_DOMAIN, domain.pk, str(domain))
        levels.append((source, policy.protocol_access if policy else None, policy))
    if mailbox is not None:
        source = Source(choices.SOURCE_MAILBOX, mailbox.pk, mailbox.email)
        levels.append((source, mailbox.protocol_access, None))
    return levels


def resolve_protocols_from(
    levels: list[tuple[Source, dict[str, Any] | None]],
) -> dict[str, dict[str, Any]]:
    """Effective access per protocol from explicit (source, overrides) levels, top first."""
    result: dict[str, dict[str, Any]] = {}
    for code in choices.PROTOCOL_CODES:
        value = choices.PROTOCOL_DEFAULTS[code]
        source = DEFAULT_SOURCE
        for level_source, access in levels:
            setting = (access or {}).get(code)
            if setting in (choices.ALLOW, choices.DENY):
                value = setting == choices.ALLOW
                source = level_source
        result[code] = {"allowed": value, "source": source.as_dict()}
    return result


def effective_protocols(
    *, customer: Customer, domain: Domain | None = None, mailbox: Mailbox | None = None
) -> dict[str, dict[str, Any]]:
    """{protocol: {"allowed": bool, "source": {...}}} at the given level."""
    levels = _levels(customer, domain, mailbox)
    return resolve_protocols_from([(source, access) for source, access, _p in levels])


def mailbox_protocols(mailbox: Mailbox) -> dict[str, dict[str, Any]]:
    return effective_protocols(customer=mailbox.customer, domain=mailbox.domain, mailbox=mailbox)


def inherited_protocols(
    *, customer: Customer, domain: Domain | None = None
) -> dict[str, dict[str, Any]]:
    """What a level below would get if it said "inherit" everywhere (shown in forms)."""
    return effective_protocols(customer=customer, domain=domain)


def effective_filtering(
    *, customer: Customer, domain: Domain | None = None, upto_parent: bool = False
) -> dict[str, dict[str, Any]]:
    """{field: {"value": ..., "source": {...}}} of the filtering policy at a level.

    ``upto_parent`` leaves the last level out: the values that level inherits.
    """
    levels = [(s, p) for s, _a, p in _levels(customer, domain, None)]
    if upto_parent:
        levels = levels[:-1]
    result: dict[str, dict[str, Any]] = {}
    for field in choices.FILTER_FIELDS:
        value: Any = choices.FILTER_DEFAULTS[field]
        source = DEFAULT_SOURCE
        for level_source, policy in levels:
            own = getattr(policy, field, None) if policy is not None else None
            if own is not None:
                value, source = own, level_source
        result[field] = {"value": value, "source": source.as_dict()}
    return result


def own_protocols(access: dict[str, Any] | None) -> dict[str, str]:
    """Every protocol with this level's own setting, "inherit" where it sets nothing."""
    access = access or {}
    return {code: access.get(code, choices.INHERIT) for code in choices.PROTOCOL_CODES}
