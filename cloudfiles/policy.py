"""Inheritance of the cloud files policy down the customer tree, with each value's source.

The same rule as mail's filtering policy (:mod:`mail.policy`): the built-in default, then
each customer from the root down; the last level that sets a field wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tenants.models import Customer

from .models import FilesPolicy

FIELDS = ("internal_shares", "external_links", "password_required", "expire_days", "quota_mb")
#: The top of the tree: sharing within the customer and external links allowed, links
#: without a password or an expiry, and no cloud quota of its own (0: the mailbox's).
DEFAULTS: dict[str, Any] = {
    "internal_shares": True,
    "external_links": True,
    "password_required": False,
    "expire_days": 0,
    "quota_mb": 0,
}


def _ancestors(path: str) -> list[str]:
    ids = [part for part in path.split("/") if part]
    return ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]


def effective_many(paths: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """{customer path: {field: {"value", "source"}}} for many customers in two queries."""
    wanted = list(dict.fromkeys(paths))
    every = {a for p in wanted for a in _ancestors(p)}
    customers = {c.path: c for c in Customer.objects.filter(path__in=every)}
    rows = {
        p.customer_path: p
        for p in FilesPolicy.objects.filter(customer__in=[c.pk for c in customers.values()])
    }
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for path in wanted:
        fields = {
            f: {"value": DEFAULTS[f], "source": {"level": "default", "id": None, "name": ""}}
            for f in FIELDS
        }
        for ancestor in _ancestors(path):
            row, customer = rows.get(ancestor), customers.get(ancestor)
            if row is None or customer is None:
                continue
            for field in FIELDS:
                value = getattr(row, field)
                if value is not None:
                    fields[field] = {
                        "value": value,
                        "source": {"level": "customer", "id": customer.pk, "name": customer.name},
                    }
        result[path] = fields
    return result


def effective(customer: Customer, *, upto_parent: bool = False) -> dict[str, dict[str, Any]]:
    """The policy in force for ``customer`` (or, with ``upto_parent``, what it inherits)."""
    if upto_parent:
        parents = _ancestors(customer.path)[:-1]
        if not parents:
            return {
                f: {"value": DEFAULTS[f], "source": {"level": "default", "id": None, "name": ""}}
                for f in FIELDS
            }
        return effective_many([parents[-1]])[parents[-1]]
    return effective_many([customer.path])[customer.path]


def values(effective_fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {field: item["value"] for field, item in effective_fields.items()}
