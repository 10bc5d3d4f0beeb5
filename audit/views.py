"""Portal audit search (placeholder, being built)."""

from django.views.generic import TemplateView

from ums.portal.views import PortalMixin


class AuditRecordListView(PortalMixin, TemplateView):
    template_name = "base.html"
    permission_required = "audit.view"
