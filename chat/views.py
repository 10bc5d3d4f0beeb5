"""Portal pages of team chat: organisations (list, create, edit, delete, sync now) and
the users of one organisation."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext, gettext_lazy
from django.views import View

from tenants import permissions as perms
from ums.portal.generic import ObjectDeleteView, ObjectFormView, scoped_object_or_404
from ums.portal.views import PortalMixin, ScopedListView

from . import actions
from .forms import ChatRealmEditForm, ChatRealmForm
from .models import ChatAccount, ChatRealm


class RealmListView(ScopedListView):
    template_name = "chat/realm_list.html"
    model = ChatRealm
    permission_required = perms.MAIL_VIEW
    ordering = "customer_path"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["can_manage"] = self.request.user.has_permission(perms.MAIL_MANAGE)
        return context


class RealmFormView(ObjectFormView):
    template_name = "chat/form.html"
    permission_required = perms.MAIL_MANAGE
    success_url_name, success_url_target = "chat:realm-list", None
    cancel_url_name, cancel_url_target = "chat:realm-list", None


class RealmCreateView(RealmFormView):
    form_class = ChatRealmForm
    action = actions.create_realm
    title = gettext_lazy("New chat organisation")
    success_message = gettext_lazy("Chat organisation %(name)s created; its sync has started.")


class RealmEditView(RealmFormView):
    form_class = ChatRealmEditForm
    model = ChatRealm
    action, object_kwarg = actions.update_realm, "realm"
    title = gettext_lazy("Chat organisation %(name)s")
    success_message = gettext_lazy("Chat organisation %(name)s saved.")
    initial_from_object = tuple(
        f for f in ChatRealmEditForm.base_fields if f not in actions.SECRET_FIELDS
    )


class RealmDeleteView(ObjectDeleteView):
    template_name = "chat/confirm.html"
    permission_required = perms.MAIL_MANAGE
    model = ChatRealm
    action, object_kwarg = actions.delete_realm, "realm"
    success_message = gettext_lazy("Chat organisation %(name)s deleted.")
    success_url_name = "chat:realm-list"
    cancel_url_name, cancel_url_target = "chat:realm-list", None


class RealmSyncView(PortalMixin, View):
    """ "Sync now": starts the job and shows its progress."""

    permission_required = perms.MAIL_MANAGE

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        realm = scoped_object_or_404(ChatRealm, request.user, pk)
        try:
            job = actions.start_sync(actor=request.user, realm=realm)
        except (ValidationError, PermissionDenied) as exc:
            for text in getattr(exc, "messages", None) or [str(exc)]:
                messages.error(request, text)
            return HttpResponseRedirect(reverse("chat:realm-list"))
        if job is None:
            messages.error(request, gettext("The organisation is disabled."))
            return HttpResponseRedirect(reverse("chat:realm-list"))
        return HttpResponseRedirect(reverse("portal:job-detail", args=[job.pk]))


class RealmUsersView(ScopedListView):
    template_name = "chat/account_list.html"
    model = ChatAccount
    permission_required = perms.MAIL_VIEW
    ordering = "email"

    def get_queryset(self) -> Any:
        self.realm = scoped_object_or_404(ChatRealm, self.request.user, self.kwargs["pk"])
        return super().get_queryset().filter(realm=self.realm)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["realm"] = self.realm
        return context
