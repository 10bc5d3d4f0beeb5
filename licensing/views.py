"""Settings → Licence: the licence, its use and days left; operators install a new one."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.translation import gettext as _

from ums.portal.views import ActionFormView

from . import actions, state
from .forms import LicenceForm
from .models import InstalledLicence

HISTORY_SHOWN = 10


class LicenceView(ActionFormView):
    template_name = "licensing/licence.html"
    form_class = LicenceForm
    permission_required = actions.VIEW_PERMISSION

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated and not actions.is_operator(request.user):
            raise PermissionDenied(_("Only operators of the installation manage its licence."))
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        status = state.current()
        context.update(
            {
                "status": status,
                "licence": status.licence,
                "can_install": self.request.user.has_permission(actions.MANAGE_PERMISSION),
                "history": InstalledLicence.objects.select_related("installed_by")[:HISTORY_SHOWN],
            }
        )
        return context

    def perform(self, form: LicenceForm) -> Any:
        licence = actions.install_licence(actor=self.request.user, text=form.cleaned_data["text"])
        self.success_message = _("Licence %(id)s for %(licensee)s is installed.") % {
            "id": licence.licence_id,
            "licensee": licence.licensee,
        }
        return licence

    def get_success_url(self) -> str:
        return reverse("licensing:licence")
