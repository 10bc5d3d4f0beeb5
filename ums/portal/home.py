"""The landing page after login: the dashboard of the administrator's part of the tree."""

from __future__ import annotations

from typing import Any

from django.views import generic

from ums.portal import dashboard
from ums.portal.views import PortalMixin


class HomeView(PortalMixin, generic.TemplateView):
    template_name = "portal/home.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["board"] = dashboard.build(self.request.user)
        return context
