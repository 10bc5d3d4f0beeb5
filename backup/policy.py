"""The effective snapshot policy of a customer, and which level each value comes from.

The built-in defaults (:data:`backup.choices.POLICY_DEFAULTS`, enabled), then each
customer from the root down; the last level that sets a field wins, as with the mail
policies (:mod:`mail.policy`). One query for the chain's customers, one for their policies.
"""

from __future__ import annotations

from typing import Any

from tenants.models import Customer

from .choices import POLICY_DEFAULTS
from .models import SnapshotPolicy

FIELDS = ("enabled", *POLICY_DEFAULTS)
DEFAULTS: dict[str, Any] = {"enabled": True, **POLICY_DEFAULTS}


def effective_policy(customer: Customer, *, upto_parent: bool = False) -> dict[str, dict[str, Any]]:
    """``{field: {"value": ..., "source": {"level", "id", "name"}}}``.

    ``upto_parent`` leaves the customer's own policy out: what it inherits.
    """
    paths = customer.ancestor_paths
    if upto_parent:
        paths = paths[:-1]
    customers = list(Customer.objects.filter(path__in=paths).order_by("depth"))
    policies = {p.customer_id: p for p in SnapshotPolicy.objects.filter(customer__in=customers)}
    result: dict[str, dict[str, Any]] = {
        f: {"value": DEFAULTS[f], "source": {"level": "default", "id": None, "name": ""}}
        for f in FIELDS
    }
    for cust in customers:
        policy = policies.get(cust.pk)
        if policy is None:
            continue
        for field in FIELDS:
            value = getattr(policy, field)
            if value is not None:
                result[field] = {
                    "value": value,
                    "source": {"level": "customer", "id": cust.pk, "name": cust.name},
                }
    return result


def values(customer: Customer) -> dict[str, Any]:
    """Just the effective values."""
    return {field: item["value"] for field, item in effective_policy(customer).items()}
