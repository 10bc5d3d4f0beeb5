"""Portal page of the load balancers' certificates (operators only): who issues each name,
what is installed, the last ACME error; change the issuer, renew now (a job)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views import View

from deploy import lb_certificate_status, lb_certificates
from deploy.certificate_models import ISSUER_CHOICES
from tenants import permissions as perms
from ums.operators import is_operator
from ums.portal.views import PortalMixin


class OperatorPage(PortalMixin, View):
    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated and not is_operator(request.user):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)


class CertificateListView(OperatorPage):
    permission_required = perms.SERVERS_VIEW

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(
            request,
            "servers/certificates.html",
            {
                "certificates": lb_certificate_status.overview(),
                "acme": lb_certificate_status.acme_settings(),
                "issuers": ISSUER_CHOICES,
                "can_manage": request.user.has_permission(perms.SERVERS_MANAGE),
            },
        )


class CertificateIssuerView(OperatorPage):
    permission_required = perms.SERVERS_MANAGE

    def post(self, request: HttpRequest) -> HttpResponse:
        name = request.POST.get("name", "")
        try:
            lb_certificates.set_certificate_issuer(
                actor=request.user, name=name, issuer=request.POST.get("issuer", "")
            )
        except ValueError:
            messages.error(request, _("Choose a valid host name and issuer."))
        else:
            messages.success(
                request,
                _("%(name)s will be issued by the chosen CA at the next renewal.") % {"name": name},
            )
        return redirect("servers:certificate-list")


class CertificateRenewView(OperatorPage):
    permission_required = perms.SERVERS_MANAGE

    def post(self, request: HttpRequest) -> HttpResponse:
        job = lb_certificates.start_renewal(actor=request.user)
        if job is None:
            messages.info(request, _("A renewal is already queued or running."))
            return redirect("servers:certificate-list")
        return redirect("portal:job-detail", pk=job.pk)
