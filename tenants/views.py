"""Portal pages for customers, administrators and tokens (placeholder, being built)."""

from django.views.generic import TemplateView

from ums.portal.views import PortalMixin


class CustomerListView(PortalMixin, TemplateView):
    template_name = "base.html"
    permission_required = "customers.view"


class SettingsView(PortalMixin, TemplateView):
    template_name = "base.html"
