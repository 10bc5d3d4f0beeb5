"""``GET /api/v1/``: the collections of the API by name, each with its absolute URL.

Built from the URL configuration itself (every route named ``*-list`` without path
parameters), so a collection an app adds appears here without being listed twice.
"""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, URLResolver, reverse
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


def _collections(patterns: list[Any], prefix: str = "") -> list[tuple[str, str, Any]]:
    """(route, url name, view class) of every list route without parameters, in URLconf
    order."""
    found: list[tuple[str, str, Any]] = []
    for pattern in patterns:
        route = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
        if isinstance(pattern, URLResolver):
            found.extend(_collections(pattern.url_patterns, route))
        elif (
            isinstance(pattern, URLPattern)
            and pattern.name
            and pattern.name.endswith("-list")
            and "(?P<" not in route
            and "<" not in route
        ):
            view = getattr(pattern.callback, "cls", None)
            found.append((route.rstrip("/"), pattern.name, view))
    return found


class ApiRootView(APIView):
    """The API's entry point: its collections, the schema and the documentation."""

    permission_classes = [IsAuthenticated]
    schema = None  # not an operation of its own in the OpenAPI document

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        from ums.api import urls

        collections = {}
        for route, name, view in _collections(urls.urlpatterns):
            # A collection only some administrators may use (controller dumps: operators)
            # says so with ``listed_for(user)``; it is left out for the others, so the
            # root never names a link that answers 403.
            listed_for = getattr(view, "listed_for", None)
            if listed_for is not None and not listed_for(request.user):
                continue
            if route and route not in collections:
                collections[route] = request.build_absolute_uri(reverse(name))
        return Response(
            {
                "collections": dict(sorted(collections.items())),
                "schema": request.build_absolute_uri(reverse("schema")),
                "docs": request.build_absolute_uri(reverse("api-docs")),
            }
        )
