"""Portal pages of cloud files: a customer's policy (inherited down the tree) and the
one-click revocation of external links (a job; its page shows the progress bar)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import View

from mail.models import Mailbox
from tenants import permissions as perms
from tenants.models import Customer
from ums import scoping
from ums.portal.generic import ObjectFormView, scoped_object_or_404
from ums.portal.views import PortalMixin

from . import actions, forms, policy
from .models import FilesPolicy


def _tri(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


class CustomerFilesView(ObjectFormView):
    template_name = "cloudfiles/customer.html"
    permission_required = perms.MAIL_VIEW
    model = Customer
    form_class = forms.FilesPolicyForm
    action, object_kwarg = actions.update_files_policy, "customer"
    title = gettext_lazy("Cloud files of %(name)s")
    success_message = gettext_lazy("Cloud files policy saved.")
    success_url_name, success_url_target = "cloudfiles:customer", "object"

    def get_initial(self) -> dict[str, Any]:
        row = FilesPolicy.objects.filter(pk=self.get_object().pk).first()
        if row is None:
            return {}
        return {
            "internal_shares": _tri(row.internal_shares),
            "external_links": _tri(row.external_links),
            "password_required": _tri(row.password_required),
            "expire_days": row.expire_days,
            "quota_mb": row.quota_mb,
        }

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_permission(perms.MAIL_MANAGE):  # type: ignore[attr-defined]
            raise PermissionDenied
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        customer = self.get_object()
        labels = {name: field.label for name, field in forms.FilesPolicyForm.base_fields.items()}
        context.update(
            {
                "customer": customer,
                "effective": [
                    (labels[name], item["value"], item["source"])
                    for name, item in policy.effective(customer).items()
                ],
                "can_manage": self.request.user.has_permission(perms.MAIL_MANAGE),
                "is_own": customer.path == self.request.user.customer_path,
                "mailbox_form": forms.RevokeMailboxForm(),
            }
        )
        return context


class RevokeView(ObjectFormView):
    """POST only: queue the revocation and show its job (progress bar) at once."""

    permission_required = perms.MAIL_MANAGE
    model = Customer
    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        customer = self.get_object()
        scope = request.POST.get("scope", "")
        mailbox = None
        if scope == actions.SCOPE_MAILBOX:
            form = forms.RevokeMailboxForm(request.POST)
            found = (
                scoping.scope_queryset(Mailbox.objects.all(), request.user)
                .filter(email=form.cleaned_data["email"], customer_path__startswith=customer.path)
                .first()
                if form.is_valid()
                else None
            )
            if found is None:
                messages.error(request, _("No mailbox with that address here."))
                return redirect("cloudfiles:customer", pk=customer.pk)
            mailbox = found
        try:
            job = actions.revoke_external_links(
                actor=request.user, scope=scope, customer=customer, mailbox=mailbox
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("cloudfiles:customer", pk=customer.pk)
        return HttpResponseRedirect(reverse("portal:job-detail", args=[job.pk]))


class HomeView(PortalMixin, View):
    """The administrator's own customer's page."""

    permission_required = perms.MAIL_VIEW

    def get(self, request: HttpRequest) -> HttpResponse:
        customer = scoped_object_or_404(Customer, request.user, request.user.customer_id, ())
        return redirect("cloudfiles:customer", pk=customer.pk)
