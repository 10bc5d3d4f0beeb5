"""Portal pages for the customer tree, administrators, and the administrator's own settings.

Views are thin: they look objects up through the scoping rule (outside scope is 404), show
forms, and hand valid input to :mod:`tenants.actions` with ``actor=request.user``. Errors an
action raises come back as form errors (see :class:`ums.portal.views.ActionFormView`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import View

from ums import scoping
from ums.portal.generic import ObjectFormView
from ums.portal.paging import keyset_page
from ums.portal.views import (
    ActionFormView,
    PortalMixin,
    ScopedDetailView,
    ScopedListView,
    apply_validation_error,
)

from . import actions, session_records
from . import permissions as perms
from .auth_views import safe_next
from .forms import (
    AdministratorCreateForm,
    AdministratorEditForm,
    AdministratorPasswordForm,
    ConfirmForm,
    CustomerForm,
    CustomerMoveForm,
    CustomerSearchForm,
    OwnPasswordForm,
    ProfileForm,
    TokenForm,
)
from .identity_views import needs_step_up, step_up
from .models import Administrator, ApiToken, Customer
from .twofactor import policy
from .twofactor.session import proof_from_session

ADMINS_ON_DETAIL = 20
TOKENS_LISTED = 100
# Children fetched into the tree at once; past this the tree links to the customer's page,
# which pages through all of them.
TREE_CHILDREN = 100
TREE_MAX_INDENT = 30


def breadcrumbs(customer: Customer, user: Any) -> list[Customer]:
    """The customer's ancestors the user may see (top first), then the customer itself."""
    return list(
        scoping.scope_queryset(Customer.objects.filter(path__in=customer.ancestor_paths), user)
        .order_by("depth")
        .only("id", "name", "path", "depth")
    )


def _with_child_counts(queryset: models.QuerySet) -> models.QuerySet:
    return queryset.annotate(child_count=models.Count("children"))


def _trail_names(items: list[Customer], user: Any) -> dict[int, str]:
    """For search results: each customer's visible ancestors as "A › B", in one query."""
    wanted = {p for c in items for p in c.ancestor_paths[:-1]}
    names = dict(
        scoping.scope_queryset(Customer.objects.filter(path__in=wanted), user).values_list(
            "path", "name"
        )
    )
    return {c.pk: " › ".join(names[p] for p in c.ancestor_paths[:-1] if p in names) for c in items}


# ------------------------------------------------------------------------------ customers


class CustomerListView(ScopedListView):
    """The tree's entry: the home customer and its children, or a search of the subtree."""

    template_name = "tenants/customer_list.html"
    permission_required = perms.CUSTOMERS_VIEW
    model = Customer
    ordering = "id"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.search_form = CustomerSearchForm(request.GET or None)
        self.query = ""
        self.within: Customer | None = None
        if self.search_form.is_valid():
            self.query = self.search_form.cleaned_data["q"].strip()
            within = self.search_form.cleaned_data.get("within")
            if within:
                self.within = scoping.get_in_scope_or_404(
                    Customer.objects.all(), request.user, pk=within
                )
        return super().get(request, *args, **kwargs)

    def filter_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        if self.search_form.is_bound and not self.search_form.is_valid():
            return queryset.none()
        if self.query:
            if self.within is not None:
                queryset = queryset.filter(path__startswith=self.within.path)
            return _with_child_counts(queryset.filter(name__icontains=self.query))
        return _with_child_counts(queryset.filter(parent_id=self.request.user.customer_id))

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        home = _with_child_counts(scoping.scope_queryset(Customer.objects.all(), user)).get(
            pk=user.customer_id
        )
        trails = _trail_names(context["object_list"], user) if self.query else {}
        context.update(
            {
                "home": home,
                "search_form": self.search_form,
                "query": self.query,
                "within": self.within,
                "rows": [(c, trails.get(c.pk, "")) for c in context["object_list"]],
                "tree_children": context["object_list"],
                "tree_parent_id": home.pk,
                "can_manage": user.has_permission(perms.CUSTOMERS_MANAGE),
            }
        )
        return context


class CustomerDetailView(ScopedDetailView):
    template_name = "tenants/customer_detail.html"
    permission_required = perms.CUSTOMERS_VIEW
    model = Customer
    context_object_name = "customer"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        customer: Customer = self.object
        children = _with_child_counts(self.get_queryset().filter(parent_id=customer.pk))
        page = keyset_page(children, self.request.GET, "id", 50)
        can_see_admins = user.has_permission(perms.ADMINISTRATORS_VIEW)
        admins: list[Administrator] = []
        admin_count = 0
        if can_see_admins:
            at_customer = scoping.scope_queryset(
                Administrator.objects.filter(customer_id=customer.pk), user
            )
            admins = list(at_customer.order_by("username")[:ADMINS_ON_DETAIL])
            admin_count = at_customer.count() if len(admins) == ADMINS_ON_DETAIL else len(admins)
        crumbs = breadcrumbs(customer, user)
        context.update(
            {
                "crumbs": crumbs[:-1],
                "page": page,
                "children": page.items,
                "admins": admins,
                "admin_count": admin_count,
                "can_see_admins": can_see_admins,
                "can_manage": user.has_permission(perms.CUSTOMERS_MANAGE),
                "can_manage_admins": user.has_permission(perms.ADMINISTRATORS_MANAGE),
                "is_home": customer.pk == user.customer_id,
                "login_enabled": customer.login_enabled(),
                "search_form": CustomerSearchForm(initial={"within": customer.pk}),
            }
        )
        return context


class CustomerChildrenView(PortalMixin, View):
    """The sub-customers of one customer as tree rows: what a tree toggle fetches in place.

    Without JavaScript nobody calls this; the names are plain links to each customer's page,
    which lists its children. ``depth`` only indents the rows (bounded, never trusted).
    """

    permission_required = perms.CUSTOMERS_VIEW

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        parent = scoping.get_in_scope_or_404(Customer.objects.all(), request.user, pk=pk)
        raw_depth = request.GET.get("depth", "1")
        depth = min(int(raw_depth), TREE_MAX_INDENT) if raw_depth.isdigit() else 1
        children = list(
            _with_child_counts(
                scoping.scope_queryset(Customer.objects.filter(parent_id=parent.pk), request.user)
            ).order_by("name", "id")[: TREE_CHILDREN + 1]
        )
        more = len(children) > TREE_CHILDREN
        context = {
            "children": children[:TREE_CHILDREN],
            "parent_id": parent.pk,
            "depth": depth,
            "more_url": reverse("tenants:customer-detail", args=[parent.pk]) if more else "",
            "more_count": _child_count(parent, request.user) if more else 0,
        }
        return TemplateResponse(request, "tenants/_tree_rows.html", context)


def _child_count(parent: Customer, user: Any) -> int:
    return scoping.scope_queryset(Customer.objects.filter(parent_id=parent.pk), user).count()


class CustomerActionMixin:
    """Looks the customer of the URL up within the actor's scope (404 otherwise)."""

    request: HttpRequest
    kwargs: dict[str, Any]

    def get_customer(self) -> Customer:
        if not hasattr(self, "_customer"):
            self._customer = scoping.get_in_scope_or_404(
                Customer.objects.all(), self.request.user, pk=self.kwargs["pk"]
            )
        return self._customer

    def customer_context(self) -> dict[str, Any]:
        customer = self.get_customer()
        return {"customer": customer, "crumbs": breadcrumbs(customer, self.request.user)}


class CustomerFormView(ObjectFormView):
    """A customer form page (declared on the generic view): crumbs of the customer shown."""

    template_name = "tenants/customer_form.html"
    permission_required = perms.CUSTOMERS_MANAGE
    form_class = CustomerForm
    success_url_name = "tenants:customer-detail"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        customer = self.target()
        context.update({"customer": customer, "crumbs": breadcrumbs(customer, self.request.user)})
        return context


class CustomerCreateView(CustomerFormView):
    """Create a sub-customer under the customer of the URL."""

    parent_model = Customer
    action, parent_kwarg = actions.create_customer, "parent"
    title = gettext_lazy("New sub-customer of %(name)s")
    submit_label = gettext_lazy("Create customer")
    success_message = gettext_lazy("Customer “%(name)s” created.")


class CustomerEditView(CustomerFormView):
    model = Customer
    action, object_kwarg = actions.update_customer, "customer"
    initial_from_object = ("name", "notes")
    title = gettext_lazy("Edit %(name)s")
    success_message = gettext_lazy("Customer “%(name)s” saved.")


class CustomerMoveView(CustomerActionMixin, ActionFormView):
    """Move a subtree: the destination is any customer in scope outside the subtree."""

    template_name = "tenants/customer_move.html"
    permission_required = perms.CUSTOMERS_MANAGE
    form_class = CustomerMoveForm

    def search_text(self) -> str:
        return self.request.GET.get("q", "").strip()[:100]

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        kwargs["customer"] = self.get_customer()
        kwargs["search"] = self.search_text()
        return kwargs

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(self.customer_context())
        field = context["form"].fields["parent"]
        context["search"] = self.search_text()
        context["shown"] = len(field.display_objects())
        context["display_limit"] = field.display_limit
        return context

    def perform(self, form: CustomerMoveForm) -> Customer:
        moved = actions.move_customer(
            actor=self.request.user,
            customer=self.get_customer(),
            new_parent=form.cleaned_data["parent"],
        )
        messages.success(
            self.request,
            _("“%(name)s” moved under “%(parent)s”.")
            % {"name": moved.name, "parent": form.cleaned_data["parent"].name},
        )
        return moved

    def get_success_url(self) -> str:
        return reverse("tenants:customer-detail", args=[self.result.pk])


class CustomerSetActiveView(CustomerActionMixin, PortalMixin, View):
    """POST only: disable (``active`` = 0) or enable (``active`` = 1) a customer."""

    permission_required = perms.CUSTOMERS_MANAGE
    http_method_names = ["post"]
    active = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        customer = self.get_customer()
        try:
            actions.set_customer_active(actor=request.user, customer=customer, active=self.active)
        except (ValidationError, PermissionDenied) as exc:
            for message in _error_messages(exc):
                messages.error(request, message)
        else:
            if self.active:
                text = _("“%(name)s” is enabled.")
            else:
                text = _("“%(name)s” is disabled: nobody in its subtree can log in.")
            messages.success(request, text % {"name": customer.name})
        return redirect("tenants:customer-detail", pk=customer.pk)


class CustomerDeleteView(CustomerActionMixin, ActionFormView):
    template_name = "tenants/customer_confirm_delete.html"
    permission_required = perms.CUSTOMERS_MANAGE
    form_class = ConfirmForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(self.customer_context())
        return context

    def perform(self, form: ConfirmForm) -> None:
        customer = self.get_customer()
        actions.delete_customer(actor=self.request.user, customer=customer)
        messages.success(self.request, _("Customer “%(name)s” deleted.") % {"name": customer.name})

    def get_success_url(self) -> str:
        parent_id = self.get_customer().parent_id
        if (
            parent_id
            and scoping.scope_queryset(
                Customer.objects.filter(pk=parent_id), self.request.user
            ).exists()
        ):
            return reverse("tenants:customer-detail", args=[parent_id])
        return reverse("tenants:customer-list")


def _error_messages(exc: ValidationError | PermissionDenied) -> list[str]:
    if isinstance(exc, ValidationError):
        return list(exc.messages)
    return [str(exc) or _("Permission denied.")]


# ------------------------------------------------------------------------- administrators


class AdministratorListView(ScopedListView):
    template_name = "tenants/administrator_list.html"
    permission_required = perms.ADMINISTRATORS_VIEW
    queryset = Administrator.objects.select_related("customer")
    ordering = "id"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.query = request.GET.get("q", "").strip()[:150]
        self.customer: Customer | None = None
        customer_id = request.GET.get("customer", "")
        if customer_id:
            if not (customer_id.isdigit() and len(customer_id) < 19):
                raise Http404
            self.customer = scoping.get_in_scope_or_404(
                Customer.objects.all(), request.user, pk=int(customer_id)
            )
        return super().get(request, *args, **kwargs)

    def filter_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        if "\x00" in self.query:
            return queryset.none()
        if self.customer is not None:
            queryset = queryset.filter(customer_id=self.customer.pk)
        if self.query:
            queryset = queryset.filter(
                models.Q(username__icontains=self.query)
                | models.Q(full_name__icontains=self.query)
                | models.Q(email__icontains=self.query)
            )
        return queryset

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(
            {
                "query": self.query,
                "customer": self.customer,
                "can_manage": self.request.user.has_permission(perms.ADMINISTRATORS_MANAGE),
            }
        )
        return context


def _manageable(actor: Administrator, target: Administrator) -> bool:
    """Whether the actor may change the target; only hides buttons, the actions decide."""
    if target.pk == actor.pk:
        return True
    return actor.has_permission(perms.ADMINISTRATORS_MANAGE) and target.permission_set() <= (
        actor.permission_set()
    )


def _permission_groups(codes: set[str]) -> list[tuple[str, list[str]]]:
    groups = []
    for area, entries in perms.CATALOGUE:
        labels = [str(label) for code, label in entries if code in codes]
        if labels:
            groups.append((str(area), labels))
    return groups


class AdministratorDetailView(ScopedDetailView):
    template_name = "tenants/administrator_detail.html"
    permission_required = perms.ADMINISTRATORS_VIEW
    queryset = Administrator.objects.select_related("customer")
    context_object_name = "admin"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        admin: Administrator = self.object
        user = self.request.user
        tokens = ApiToken.objects.filter(owner=admin, revoked_at__isnull=True).order_by("-id")
        context.update(
            {
                "two_factor": {
                    "totp": policy.has_totp(admin),
                    "keys": admin.security_keys.count(),
                    "required": policy.two_factor_required(admin),
                },
                "crumbs": breadcrumbs(admin.customer, user),
                "permission_groups": _permission_groups(admin.permission_set()),
                "can_manage": _manageable(user, admin)
                and user.has_permission(perms.ADMINISTRATORS_MANAGE),
                "is_self": admin.pk == user.pk,
                "tokens": list(tokens[:TOKENS_LISTED]),
            }
        )
        return context


class AdministratorActionMixin:
    request: HttpRequest
    kwargs: dict[str, Any]

    def get_admin(self) -> Administrator:
        if not hasattr(self, "_admin"):
            self._admin = scoping.get_in_scope_or_404(
                Administrator.objects.select_related("customer"),
                self.request.user,
                pk=self.kwargs["pk"],
            )
        return self._admin

    def admin_context(self) -> dict[str, Any]:
        admin = self.get_admin()
        return {
            "admin": admin,
            "crumbs": breadcrumbs(admin.customer, self.request.user),
            "manageable": _manageable(self.request.user, admin),
        }

    def get_success_url(self) -> str:
        return reverse("tenants:administrator-detail", args=[self.get_admin().pk])


class AdministratorCreateView(ActionFormView):
    template_name = "tenants/administrator_form.html"
    permission_required = perms.ADMINISTRATORS_MANAGE
    form_class = AdministratorCreateForm

    def get_initial(self) -> dict[str, Any]:
        initial: dict[str, Any] = {"is_active": True}
        customer_id = self.request.GET.get("customer", "")
        if customer_id.isdigit() and len(customer_id) < 19:
            initial["customer"] = int(customer_id)
        return initial

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["title"] = _("New administrator")
        context["submit_label"] = _("Create administrator")
        return context

    def perform(self, form: AdministratorCreateForm) -> Administrator:
        data = form.cleaned_data
        admin = actions.create_administrator(
            actor=self.request.user,
            customer=data["customer"],
            username=data["username"],
            full_name=data["full_name"],
            email=data["email"],
            password=data["password"],
            permissions=data["permissions"],
            is_active=data["is_active"],
        )
        messages.success(
            self.request, _("Administrator “%(name)s” created.") % {"name": admin.username}
        )
        return admin

    def get_success_url(self) -> str:
        return reverse("tenants:administrator-detail", args=[self.result.pk])


class AdministratorEditView(AdministratorActionMixin, ActionFormView):
    template_name = "tenants/administrator_form.html"
    permission_required = perms.ADMINISTRATORS_MANAGE
    form_class = AdministratorEditForm

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        kwargs["admin"] = self.get_admin()
        return kwargs

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(self.admin_context())
        context["title"] = _("Edit administrator %(name)s") % {"name": self.get_admin().username}
        context["submit_label"] = _("Save")
        return context

    def perform(self, form: AdministratorEditForm) -> Administrator:
        data = form.cleaned_data
        admin = actions.update_administrator(
            actor=self.request.user,
            admin=self.get_admin(),
            full_name=data["full_name"],
            email=data["email"],
            customer=data["customer"],
            permissions=data["permissions"],
            is_active=data["is_active"],
        )
        messages.success(
            self.request, _("Administrator “%(name)s” saved.") % {"name": admin.username}
        )
        return admin


class AdministratorPasswordView(AdministratorActionMixin, ActionFormView):
    template_name = "tenants/administrator_password.html"
    permission_required = perms.ADMINISTRATORS_MANAGE
    form_class = AdministratorPasswordForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "admin": self.get_admin()}

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(self.admin_context())
        return context

    def perform(self, form: AdministratorPasswordForm) -> None:
        admin = self.get_admin()
        actions.set_administrator_password(
            actor=self.request.user, admin=admin, password=form.cleaned_data["password"]
        )
        if admin.pk == self.request.user.pk:
            admin.refresh_from_db()
            update_session_auth_hash(self.request, admin)
        # Django ends the other sessions of the account (their password hash is stale); the
        # list of active sessions says so at once.
        keep = (
            session_records.current_hash(self.request) if admin.pk == self.request.user.pk else None
        )
        session_records.end_others(admin.pk, keep, "password")
        messages.success(
            self.request, _("Password of “%(name)s” changed.") % {"name": admin.username}
        )


class AdministratorDeleteView(AdministratorActionMixin, ActionFormView):
    template_name = "tenants/administrator_confirm_delete.html"
    permission_required = perms.ADMINISTRATORS_MANAGE
    form_class = ConfirmForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(self.admin_context())
        return context

    def perform(self, form: ConfirmForm) -> None:
        admin = self.get_admin()
        actions.delete_administrator(actor=self.request.user, admin=admin)
        messages.success(
            self.request, _("Administrator “%(name)s” deleted.") % {"name": admin.username}
        )

    def get_success_url(self) -> str:
        if self.request.user.has_permission(perms.CUSTOMERS_VIEW):
            return reverse("tenants:customer-detail", args=[self.get_admin().customer_id])
        return reverse("tenants:administrator-list")


# ------------------------------------------------------------------------------ settings


def _myself(request: HttpRequest) -> Administrator:
    """The logged-in administrator as a model instance (``request.user`` is a lazy proxy)."""
    return Administrator.objects.select_related("customer").get(pk=request.user.pk)


def _own_tokens(user: Administrator) -> list[ApiToken]:
    return list(ApiToken.objects.filter(owner=user).order_by("-id")[:TOKENS_LISTED])


class SettingsView(ActionFormView):
    """The administrator's own profile, with their API tokens listed below it."""

    template_name = "tenants/settings.html"
    form_class = ProfileForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        context.update(
            {
                "tokens": _own_tokens(user),
                "can_create_tokens": user.has_permission(perms.TOKENS_MANAGE),
                "token_form": TokenForm(actor=user),
                "permission_groups": _permission_groups(user.permission_set()),
                "two_factor_enrolled": policy.is_enrolled(user),
                "two_factor_required": policy.two_factor_required(user),
                "session_count": user.session_records.filter(revoked_at__isnull=True).count(),
            }
        )
        return context

    def perform(self, form: ProfileForm) -> Administrator:
        admin = actions.update_administrator(
            actor=self.request.user,
            admin=_myself(self.request),
            full_name=form.cleaned_data["full_name"],
            email=form.cleaned_data["email"],
            language=form.cleaned_data["language"],
        )
        if admin.language:
            # The next page is in the chosen language: say so in that language already.
            translation.activate(admin.language)
        messages.success(self.request, _("Your profile is saved."))
        return admin

    def get_success_url(self) -> str:
        return reverse("tenants:settings")

    def form_valid(self, form: ProfileForm) -> HttpResponse:
        response = super().form_valid(form)
        language = form.cleaned_data.get("language")
        if response.status_code == 302 and language:
            response.set_cookie(
                settings.LANGUAGE_COOKIE_NAME,
                language,
                max_age=settings.LANGUAGE_COOKIE_AGE,
                path=settings.LANGUAGE_COOKIE_PATH,
                domain=settings.LANGUAGE_COOKIE_DOMAIN,
                secure=settings.LANGUAGE_COOKIE_SECURE,
                httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
                samesite=settings.LANGUAGE_COOKIE_SAMESITE,
            )
        return response


class OwnPasswordView(ActionFormView):
    template_name = "tenants/password_change.html"
    form_class = OwnPasswordForm

    def perform(self, form: OwnPasswordForm) -> None:
        me = _myself(self.request)
        actions.set_administrator_password(
            actor=self.request.user, admin=me, password=form.cleaned_data["password"]
        )
        me.refresh_from_db()
        # Keep this session; other sessions of the account end with the old password hash.
        update_session_auth_hash(self.request, me)
        session_records.end_others(me.pk, session_records.current_hash(self.request), "password")
        messages.success(self.request, _("Your password is changed."))

    def get_success_url(self) -> str:
        return reverse("tenants:settings")


class TokenCreateView(ActionFormView):
    """Create an own API token. The secret is shown in this one response and never again.

    The response is rendered directly (not redirected) so the secret never rests in the
    session store; it is marked ``no-store`` so no cache keeps it either.
    """

    template_name = "tenants/token_form.html"
    permission_required = perms.TOKENS_MANAGE
    form_class = TokenForm

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # A token outlives this session: with a second factor, it must have been passed
        # recently. Go through the challenge and come back to this form.
        if request.user.is_authenticated and needs_step_up(request):
            return step_up(request, reverse("tenants:token-create"))
        return super().dispatch(request, *args, **kwargs)

    def form_valid(self, form: TokenForm) -> HttpResponse:
        try:
            token, secret = actions.create_token(
                actor=self.request.user,
                name=form.cleaned_data["name"],
                read_only=form.cleaned_data["read_only"],
                expires_at=form.cleaned_data["expires_at"],
                second_factor=proof_from_session(self.request),
            )
        except ValidationError as exc:
            apply_validation_error(form, exc)
            return self.form_invalid(form)
        except PermissionDenied as exc:
            form.add_error(None, str(exc) or _("Permission denied."))
            return self.form_invalid(form)
        response = TemplateResponse(
            self.request, "tenants/token_created.html", {"token": token, "secret": secret}
        )
        response["Cache-Control"] = "no-store"
        return response


class TokenRevokeView(PortalMixin, View):
    """POST only: revoke a token (one's own, or one of an administrator one manages)."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        tokens = ApiToken.objects.select_related("owner")
        if not request.user.has_permission(perms.ADMINISTRATORS_VIEW):
            tokens = tokens.filter(owner=request.user)
        token = scoping.get_in_scope_or_404(tokens, request.user, pk=kwargs["pk"])
        try:
            actions.revoke_token(actor=request.user, token=token)
        except (ValidationError, PermissionDenied) as exc:
            for message in _error_messages(exc):
                messages.error(request, message)
        else:
            messages.success(request, _("Token “%(name)s” revoked.") % {"name": token.name})
        target = safe_next(request.POST.get("next")) or reverse("tenants:settings")
        return HttpResponseRedirect(target)
