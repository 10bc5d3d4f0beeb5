"""Walks every portal route: each must demand a login, unless it is public on purpose.

Scope (404 for outsiders) is checked page by page in the access tests of each section;
this walker guarantees that no page added later is reachable without logging in.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

# Public by design, with the reason.
PUBLIC: dict[str, str] = {
    "portal:login": "the login form itself",
    "portal:password-reset": "asking for a reset link: for those who cannot log in",
    "portal:password-reset-confirm": "the reset link from the mail (its token is the proof)",
    "set_language": "language switch, also on the login page",
    "bootstrapcore": "the script new nodes download before they can authenticate",
    "schema": "API schema: describes the API, no data",
    "api-docs": "API docs: served locally, no data",
}
PUBLIC_PREFIXES = ("api/", "static/", "i18n/", "install/", "saml/", "sso/")


def _portal_routes() -> list[tuple[str, str]]:
    routes: list[tuple[str, str]] = []

    def walk(patterns, prefix: str, namespace: str) -> None:
        for entry in patterns:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                ns = entry.namespace or namespace
                walk(entry.url_patterns, route, f"{ns}" if ns else namespace)
            elif isinstance(entry, URLPattern):
                name = f"{namespace}:{entry.name}" if namespace and entry.name else entry.name
                routes.append((name or route, route))

    walk(get_resolver().url_patterns, "", "")
    return routes


def _concrete(route: str) -> str:
    path = re.sub(r"<(?:[a-z]+:)?pk>|<(?:[a-z]+:)?[a-z_]*id>", "1", route)
    path = re.sub(r"<(?:slug:)?[a-z_]+>", "x", path)
    path = path.replace("^", "").replace("$", "").replace("\\Z", "")
    return "/" + path


@pytest.mark.django_db
def test_every_portal_page_requires_login() -> None:
    client = Client()
    checked = 0
    for name, route in _portal_routes():
        if name in PUBLIC or route.startswith(PUBLIC_PREFIXES) or "(?P" in route:
            continue
        url = _concrete(route)
        redirected = False
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            # The login check comes first in every portal view: not even a 404 may leak
            # whether an object exists.
            assert response.status_code in (302, 405), (name, url, method)
            if response.status_code == 302:
                assert "/login/" in response["Location"], (name, url, method)
                redirected = True
        assert redirected, (name, url)
        checked += 1
    assert checked > 20, "the walker found too few portal routes"
