"""Base portal views: login required, area permission, scoping, writes through actions."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.translation import gettext as _
from django.views import generic

from ums import scoping
from ums.portal.paging import KeysetPage, keyset_page


class PortalMixin(LoginRequiredMixin):
    """Every portal page: logged in, holding ``permission_required`` (if any)."""

    permission_required: str | None = None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        if self.permission_required and not request.user.has_permission(self.permission_required):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)


class ScopedQuerysetMixin(PortalMixin):
    model: type[models.Model] | None = None
    queryset: models.QuerySet | None = None

    def get_queryset(self) -> models.QuerySet:
        queryset = (
            self.queryset.all() if self.queryset is not None else self.model._default_manager.all()
        )
        return scoping.scope_queryset(queryset, self.request.user)


class ScopedListView(ScopedQuerysetMixin, generic.TemplateView):
    """A list page paged by keyset (``?after=`` / ``?before=``), never by OFFSET."""

    page_size = 50
    ordering = "-id"

    def filter_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        return queryset

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        queryset = self.filter_queryset(self.get_queryset())
        page: KeysetPage = keyset_page(queryset, self.request.GET, self.ordering, self.page_size)
        context["page"] = page
        context["object_list"] = page.items
        return context


class ScopedDetailView(ScopedQuerysetMixin, generic.DetailView):
    pass


class ActionFormView(PortalMixin, generic.FormView):
    """A form whose valid submission calls an action function.

    Validation and permission errors raised by the action come back as form errors, so the
    portal shows exactly what the API would refuse.
    """

    success_message: str = ""

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        kwargs["actor"] = self.request.user
        return kwargs

    def perform(self, form: Any) -> Any:
        raise NotImplementedError

    def form_valid(self, form: Any) -> HttpResponse:
        try:
            self.result = self.perform(form)
        except ValidationError as exc:
            apply_validation_error(form, exc)
            return self.form_invalid(form)
        except PermissionDenied as exc:
            form.add_error(None, str(exc) or _("You do not have permission to do this."))
            return self.form_invalid(form)
        if self.success_message:
            messages.success(self.request, self.success_message)
        return HttpResponseRedirect(self.get_success_url())


def apply_validation_error(form: Any, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)
