"""Operators: administrators of a top-level customer, who run the installation itself
(its licence, the load balancers' certificates). Tenants below never see these."""

from __future__ import annotations

from typing import Any


def is_operator(user: Any) -> bool:
    """An administrator of a top-level customer (one path segment: ``/1/``)."""
    path = getattr(user, "customer_path", None) or ""
    return (
        bool(getattr(user, "is_authenticated", False))
        and len([p for p in path.split("/") if p]) == 1
    )
