"""Who should be a user of a realm: every enabled mailbox of its subtree whose effective
``chat`` access is allowed, except mailboxes under a nested realm (the nearest realm wins).

A constant number of queries whatever the size of the subtree: customer and domain
policies are read once and folded with ``mail.policy.resolve_protocols_from``, the same
function the API shows effective access with.
"""

from __future__ import annotations

from dataclasses import dataclass

from mail.models import CustomerPolicy, Domain, DomainPolicy, Mailbox
from mail.policy import Source, resolve_protocols_from
from tenants.models import Customer

from .models import ChatRealm


@dataclass(frozen=True)
class WantedUser:
    email: str
    full_name: str
    customer_path: str


def _ancestors(path: str) -> list[str]:
    ids = [part for part in path.split("/") if part]
    return ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]


def managed_domains(realm: ChatRealm) -> set[str]:
    """Domains whose addresses the realm's users come from (its subtree, nested realms
    excluded): only users with these addresses are ever deactivated by a sync."""
    nested = _nested_paths(realm)
    return {
        name
        for name, path in Domain.objects.filter(
            customer_path__startswith=realm.customer_path
        ).values_list("name", "customer_path")
        if not any(path.startswith(n) for n in nested)
    }


def _nested_paths(realm: ChatRealm) -> list[str]:
    return list(
        ChatRealm.objects.filter(customer_path__startswith=realm.customer_path)
        .exclude(pk=realm.pk)
        .values_list("customer_path", flat=True)
    )


def wanted_users(realm: ChatRealm) -> dict[str, WantedUser]:
    """{email: WantedUser} of the realm, in address order."""
    nested = _nested_paths(realm)
    rows = [
        row
        for row in Mailbox.objects.filter(
            customer_path__startswith=realm.customer_path, is_enabled=True
        )
        .order_by("email")
        .values_list("email", "display_name", "domain_id", "customer_path", "protocol_access")
        if not any(row[3].startswith(n) for n in nested)
    ]
    domain_ids = {row[2] for row in rows}
    domains = {
        pk: (name, path)
        for pk, name, path in Domain.objects.filter(pk__in=domain_ids).values_list(
            "pk", "name", "customer_path"
        )
    }
    paths = {a for _n, path in domains.values() for a in _ancestors(path)}
    customers = dict(Customer.objects.filter(path__in=paths).values_list("path", "pk"))
    cpolicies = dict(
        CustomerPolicy.objects.filter(customer_id__in=customers.values()).values_list(
            "customer_id", "protocol_access"
        )
    )
    dpolicies = dict(
        DomainPolicy.objects.filter(domain_id__in=domain_ids).values_list(
            "domain_id", "protocol_access"
        )
    )
    cache: dict[tuple[int, str], bool] = {}
    result: dict[str, WantedUser] = {}
    for email, display_name, domain_id, customer_path, access in rows:
        key = (domain_id, repr(sorted((access or {}).items())))
        allowed = cache.get(key)
        if allowed is None:
            name, path = domains[domain_id]
            levels = [
                (Source("customer", customers[p]), cpolicies.get(customers[p]))
                for p in _ancestors(path)
                if p in customers
            ]
            levels.append((Source("domain", domain_id, name), dpolicies.get(domain_id)))
            levels.append((Source("mailbox"), access or {}))
            allowed = bool(resolve_protocols_from(levels)["chat"]["allowed"])
            cache[key] = allowed
        if allowed:
            email = email.lower()
            full_name = display_name or email.split("@", 1)[0]
            result[email] = WantedUser(email, full_name, customer_path)
    return result
