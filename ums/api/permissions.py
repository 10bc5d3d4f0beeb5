"""The API's permission rule: area permission by method, and read-only tokens."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request


class AreaPermission(permissions.BasePermission):
    """Reads need ``<area>.view``, writes ``<area>.manage`` (or what the view declares).

    A view sets ``permission_area`` or a ``required_permissions`` mapping of DRF action name
    (or HTTP method) to a code; ``None`` there means "any authenticated administrator".
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        # POST endpoints that only read (a search with a JSON body, such as the spam
        # hold query of the product sheet) name themselves in ``read_only_actions``.
        safe = request.method in permissions.SAFE_METHODS or getattr(
            view, "action", None
        ) in getattr(view, "read_only_actions", ())
        if not safe and getattr(request.auth, "read_only", False):
            return False
        code = required_code(view, request)
        return code is None or user.has_permission(code)


def required_code(view: Any, request: Request) -> str | None:
    mapping = getattr(view, "required_permissions", {}) or {}
    action = getattr(view, "action", None)
    if action in mapping:
        return mapping[action]
    if request.method in mapping:
        return mapping[request.method]
    area = getattr(view, "permission_area", None)
    if area is None:
        return None
    safe = request.method in permissions.SAFE_METHODS
    return f"{area}.view" if safe else f"{area}.manage"
