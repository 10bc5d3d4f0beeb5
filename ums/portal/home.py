"""The landing page after login: the first section the administrator may see."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views import View

from ums.portal.context import NAVIGATION
from ums.portal.views import PortalMixin


class HomeView(PortalMixin, View):
    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        for url_name, _label, _icon, code in NAVIGATION:
            if url_name and code and request.user.has_permission(code):
                return redirect(url_name)
        return redirect("tenants:settings")
