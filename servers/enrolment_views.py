"""Portal pages for enrolment tokens: list, create (the secret shown once), revoke.

Views stay thin: lookups go through the scoping rule (outside scope is a 404) and every
change is a call to :mod:`servers.enrolment` with ``actor=request.user``.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views import View

from tenants import permissions as perms
from ums import scoping
from ums.portal.views import ActionFormView, PortalMixin, ScopedListView, apply_validation_error

from . import enrolment
from .enrolment_forms import EnrolmentTokenForm
from .install import operator_command, script_url
from .models import EnrolmentToken, Zone


def _zone_from_query(request: HttpRequest) -> Zone | None:
    """The zone of ``?zone=`` if it is a valid id in scope; anything else is ignored."""
    raw = request.GET.get("zone", "")
    if not raw.isdigit() or len(raw) > 18:
        return None
    return scoping.scope_queryset(Zone.objects.all(), request.user).filter(pk=int(raw)).first()


class EnrolmentTokenListView(ScopedListView):
    template_name = "servers/enrolment_token_list.html"
    permission_required = perms.SERVERS_VIEW
    queryset = EnrolmentToken.objects.select_related("zone", "zone__customer")
    ordering = "-id"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.zone = _zone_from_query(request)
        return super().get(request, *args, **kwargs)

    def filter_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        return queryset.filter(zone=self.zone) if self.zone is not None else queryset

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        now = timezone.now()
        context.update(
            {
                "zone": self.zone,
                "rows": [(t, enrolment.token_state(t, now)) for t in context["object_list"]],
                "can_manage": self.request.user.has_permission(perms.SERVERS_MANAGE),
                "script_url": script_url(),
                # A token belongs to a zone: with no zone yet, the page says to create one.
                "has_zones": scoping.scope_queryset(Zone.objects.all(), self.request.user).exists(),
            }
        )
        return context


class EnrolmentTokenCreateView(ActionFormView):
    """Create a token. The secret is rendered in this one response and never again.

    Rendered directly (not redirected) so the secret never rests in the session store,
    and marked ``no-store`` so no cache keeps it.
    """

    template_name = "servers/enrolment_token_form.html"
    permission_required = perms.SERVERS_MANAGE
    form_class = EnrolmentTokenForm

    def get_initial(self) -> dict[str, Any]:
        initial = super().get_initial()
        zone = _zone_from_query(self.request)
        if zone is not None:
            initial["zone"] = zone.pk
        return initial

    def form_valid(self, form: EnrolmentTokenForm) -> HttpResponse:
        data = form.cleaned_data
        try:
            token, secret = enrolment.create_enrolment_token(
                actor=self.request.user,
                zone=data["zone"],
                name=data["name"],
                max_uses=data["max_uses"],
                expires_at=timezone.now() + datetime.timedelta(hours=data["expires_in_hours"]),
            )
        except ValidationError as exc:
            apply_validation_error(form, exc)
            return self.form_invalid(form)
        except PermissionDenied as exc:
            form.add_error(None, str(exc) or _("Permission denied."))
            return self.form_invalid(form)
        response = TemplateResponse(
            self.request,
            "servers/enrolment_token_created.html",
            {
                "token": token,
                "secret": secret,
                "command": operator_command(secret),
                "script_url": script_url(),
            },
        )
        response["Cache-Control"] = "no-store"
        return response


class EnrolmentTokenRevokeView(PortalMixin, View):
    """POST only: revoke a token of a zone in scope."""

    http_method_names = ["post"]
    permission_required = perms.SERVERS_MANAGE

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        token = scoping.get_in_scope_or_404(
            EnrolmentToken.objects.all(), request.user, pk=kwargs["pk"]
        )
        try:
            enrolment.revoke_enrolment_token(actor=request.user, token=token)
        except (ValidationError, PermissionDenied) as exc:
            messages.error(request, str(exc))
        else:
            messages.success(
                request, _("Enrolment token “%(name)s” revoked.") % {"name": token.name}
            )
        return HttpResponseRedirect(reverse("enrolment:token-list"))
