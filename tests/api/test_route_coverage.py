"""Walks every registered API route: each must be covered by the scoping contract."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from django.urls import URLPattern, URLResolver, get_resolver

import tests
from tests.api.contracts import COVERED

# Routes that are deliberately not tenant objects, with the reason.
NOT_SCOPED: dict[str, str] = {
    "api-root": "lists the URLs of the collections; holds no tenant data",
    "licence": (
        "the installation's licence: one resource for operators (top-level administrators), "
        "403 for everyone else; tests/licensing/test_api.py"
    ),
    "node-register": (
        "unauthenticated by design (bootstrapcore.sh on a new node); authorised by the "
        "enrolment token in the body, which fixes the zone and customer"
    ),
}


def _api_basenames() -> set[str]:
    names: set[str] = set()

    def walk(patterns, prefix: str) -> None:
        for entry in patterns:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route)
            elif isinstance(entry, URLPattern) and route.startswith("api/v1/"):
                initkwargs = getattr(entry.callback, "initkwargs", {})
                # A plain view (not a viewset) counts under its URL name.
                names.add(initkwargs.get("basename") or entry.name or route)

    walk(get_resolver().url_patterns, "")
    return names


def test_every_api_route_has_a_scoping_contract() -> None:
    # Contracts may live beside the app's other tests: import every test module.
    root = Path(tests.__file__).parent
    for module in pkgutil.walk_packages([str(root)], prefix="tests."):
        if module.name.rsplit(".", 1)[-1].startswith("test_"):
            importlib.import_module(module.name)
    routes = _api_basenames()
    assert routes, "no API routes found"
    uncovered = routes - COVERED - set(NOT_SCOPED)
    assert not uncovered, f"API routes without a scoping contract test: {sorted(uncovered)}"
