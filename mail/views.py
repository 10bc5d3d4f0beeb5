"""Portal pages of the mail app: domains with their tabs, mailboxes, aliases, policies, import.

Views are thin: objects are looked up through the scoping rule (outside scope is 404),
lists are keyset-paged (``?cursor=``) on indexed orderings, and valid forms go to
:mod:`mail.actions` with ``actor=request.user``; their errors come back as form errors, all
at once. Create, edit and delete pages are declarations on the generic views of
:mod:`ums.portal.generic` (object lookup, action call, message, redirect).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import Count, OuterRef, Subquery
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views import View
from django.views.generic import TemplateView

from tenants import limit_actions
from tenants import permissions as perms
from tenants.limits import ResourceLimit, subtree_usage
from tenants.models import Customer
from tenants.twofactor import qr
from ums import scoping
from ums.portal.generic import (
    BulkActionView,
    ObjectDeleteView,
    ObjectFormView,
    ObjectMixin,
    add_errors,
    scoped_object_or_404,
)
from ums.portal.views import ActionFormView, PortalMixin

from . import actions, addressbook, choices, csv_import, dkim, forms, paging, policy, webmail
from .filtersets import search_prefix
from .models import (
    Alias,
    CustomerPolicy,
    DkimKey,
    Domain,
    DomainAlias,
    DomainPolicy,
    Mailbox,
    SieveScript,
)
from .signing import signing_keys

PAGE_SIZE = 50


def _query(request: HttpRequest) -> str:
    form = forms.SearchForm(request.GET)
    if not form.is_valid():
        return ""
    return form.cleaned_data["q"].strip()


def _error_messages(exc: ValidationError | PermissionDenied) -> list[str]:
    if isinstance(exc, ValidationError):
        return list(exc.messages)
    return [str(exc) or _("Permission denied.")]


def _form_messages(request: HttpRequest, form: Any) -> None:
    """Every error of a form posted from a page that redirects, each named by its field."""
    for name, errors in form.errors.items():
        label = form.fields[name].label if name in form.fields else ""
        for message in errors:
            messages.error(request, f"{label}: {message}" if label else message)


def _display(value: Any) -> str:
    if value is None:
        return _("off")
    if value is True:
        return _("On")
    if value is False:
        return _("Off")
    if isinstance(value, list):
        return ", ".join(value) or "—"
    return str(value)


class MailPage(PortalMixin):
    permission_required = perms.MAIL_VIEW

    def can_manage(self) -> bool:
        return self.request.user.has_permission(perms.MAIL_MANAGE)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ domains


class DomainListView(MailPage, TemplateView):
    """The mail home: domains of the subtree by name, with an address search box."""

    template_name = "mail/domain_list.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        query = _query(self.request).lower()
        domains = scoping.scope_queryset(
            Domain.objects.select_related("customer"), self.request.user
        )
        if query:
            domains = domains.filter(
                name__startswith=query if query.isascii() else search_prefix(query)
            )
        counts = (
            Mailbox.objects.filter(domain=OuterRef("pk"))
            .order_by()
            .values("domain")
            .annotate(n=Count("id"))
            .values("n")
        )
        domains = domains.annotate(mailbox_count=Subquery(counts))
        page = paging.page(domains, ("name",), self.request.GET.get("cursor"), PAGE_SIZE)
        context.update(
            {"page": page, "domains": page.items, "query": query, "can_manage": self.can_manage()}
        )
        return context


class DomainMixin(MailPage, ObjectMixin):
    """A tab of a domain's page: the domain of the URL, read once with its customer."""

    model = Domain
    select_related = ("customer",)
    tab = ""

    def get_domain(self) -> Domain:
        return self.get_object()

    def domain_context(self) -> dict[str, Any]:
        return {"domain": self.get_domain(), "tab": self.tab, "can_manage": self.can_manage()}


class DomainDetailView(DomainMixin, TemplateView):
    """Tab "mailboxes": the domain's mailboxes by name, searchable by prefix."""

    template_name = "mail/domain_mailboxes.html"
    tab = "mailboxes"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        domain = self.get_domain()
        query = _query(self.request).lower()
        mailboxes = Mailbox.objects.filter(domain=domain)
        if query:
            mailboxes = mailboxes.filter(local_part__startswith=query.split("@")[0])
        page = paging.page(
            mailboxes, ("domain_id", "local_part"), self.request.GET.get("cursor"), PAGE_SIZE
        )
        context.update(self.domain_context())
        context.update({"page": page, "mailboxes": page.items, "query": query})
        return context


class DomainAliasesView(DomainMixin, TemplateView):
    template_name = "mail/domain_aliases.html"
    tab = "aliases"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        domain = self.get_domain()
        page = paging.page(
            Alias.objects.filter(domain=domain),
            ("domain_id", "local_part"),
            self.request.GET.get("cursor"),
            PAGE_SIZE,
        )
        context.update(self.domain_context())
        context.update(
            {
                "page": page,
                "aliases": page.items,
                "domain_aliases": list(DomainAlias.objects.filter(domain=domain)[:200]),
                "domain_alias_count": DomainAlias.objects.filter(domain=domain).count(),
                "is_root": actions.is_root_administrator(self.request.user),
            }
        )
        return context


class DomainDkimView(DomainMixin, TemplateView):
    template_name = "mail/domain_dkim.html"
    tab = "dkim"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        domain = self.get_domain()
        keys = list(DkimKey.objects.filter(domain=domain).order_by("-id")[:50])
        context.update(self.domain_context())
        context.update(
            {
                "keys": [(k, dkim.zone_line(k.selector, domain.name, k.public_key)) for k in keys],
                "signing": signing_keys([domain.pk]).get(domain.pk, ("", ""))[0],
                "has_active": any(k.state == choices.DKIM_ACTIVE for k in keys),
                "spf": dkim.spf_suggestion(domain.name),
                "dmarc": dkim.dmarc_suggestion(domain.name),
                "form": forms.DkimForm(actor=self.request.user),
            }
        )
        return context


class DomainDkimActionView(DomainMixin, View):
    """POST: generate the first key, or rotate (``rotate`` in the URL)."""

    permission_required = perms.MAIL_MANAGE
    http_method_names = ["post"]
    rotate = False

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        domain = self.get_domain()
        form = forms.DkimForm(request.POST, actor=request.user)
        if form.is_valid():
            fields = {
                "selector": form.cleaned_data["selector"] or None,
                "bits": form.cleaned_data["bits"],
            }
            try:
                func = actions.rotate_dkim_key if self.rotate else actions.generate_dkim_key
                key = func(actor=request.user, domain=domain, **fields)
            except (ValidationError, PermissionDenied) as exc:
                for message in _error_messages(exc):
                    messages.error(request, message)
            else:
                messages.success(
                    request,
                    _("DKIM key “%(selector)s” created; publish its record.")
                    % {"selector": key.selector},
                )
        else:
            _form_messages(request, form)
        return redirect("mail:domain-dkim", pk=domain.pk)


class DomainDkimCheckView(DomainMixin, View):
    """POST: queue the DNS check of the domain's keys (a job; the page shows results)."""

    permission_required = perms.MAIL_MANAGE
    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        domain = self.get_domain()
        try:
            actions.check_dkim_dns(actor=request.user, domain=domain)
        except (ValidationError, PermissionDenied) as exc:
            for message in _error_messages(exc):
                messages.error(request, message)
        else:
            messages.success(request, _("DNS check started; reload this page for its result."))
        return redirect("mail:domain-dkim", pk=domain.pk)


class MailFormView(MailPage, ObjectFormView):
    """A mail create/edit/delete page: the generic form view plus the domain of the page.

    ``domain`` in the context drives the breadcrumbs of ``mail/form.html``.
    """

    template_name = "mail/form.html"
    permission_required = perms.MAIL_MANAGE

    def page_domain(self) -> Domain | None:
        for obj in (self.get_object(), self.get_parent()):
            if isinstance(obj, Domain):
                return obj
            if obj is not None and hasattr(obj, "domain_id"):
                return obj.domain  # declared in select_related: no extra query
        return None

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["domain"] = self.page_domain()
        return context


class MailDeleteView(MailFormView, ObjectDeleteView):
    template_name = "mail/confirm.html"


class DomainCreateView(MailFormView):
    form_class = forms.DomainForm
    action = actions.create_domain
    title = gettext_lazy("New domain")
    submit_label = gettext_lazy("Create domain")
    success_message = gettext_lazy("Domain “%(name)s” created.")
    success_url_name = "mail:domain-detail"
    cancel_url_name, cancel_url_target = "mail:home", None

    def get_initial(self) -> dict[str, Any]:
        customer = self.request.GET.get("customer", "")
        if customer.isdigit() and len(customer) < 19:
            return {"customer": int(customer)}
        return {"customer": self.request.user.customer_id}

    def action_kwargs(self, form: forms.DomainForm) -> dict[str, Any]:
        data = dict(form.cleaned_data)
        data["contact_email"] = data["contact_email"] or None
        return data


class DomainEditView(MailFormView):
    model = Domain
    select_related = ("customer",)
    form_class = forms.DomainEditForm
    action, object_kwarg = actions.update_domain, "domain"
    initial_from_object = (
        "is_enabled",
        "default_quota_mb",
        "catch_all",
        "description",
        "webmail_name",
    )
    title = gettext_lazy("Edit %(name)s")
    success_url_name = "mail:domain-detail"
    cancel_url_name = "mail:domain-detail"


class DomainDeleteView(MailDeleteView):
    model = Domain
    action, object_kwarg = actions.delete_domain, "domain"
    success_message = gettext_lazy("Domain deleted.")
    success_url_name = "mail:home"
    cancel_url_name = "mail:domain-detail"


class AliasesTabCreateView(MailFormView):
    """Creates something shown on a domain's "aliases" tab, and goes back there."""

    parent_model = Domain
    parent_kwarg = "domain"
    success_url_name, success_url_target = "mail:domain-aliases", "parent"
    cancel_url_name, cancel_url_target = "mail:domain-aliases", "parent"


class AliasesTabObjectView(MailFormView):
    """Edits or deletes something of a domain's "aliases" tab, and goes back there."""

    select_related = ("domain",)
    success_url_name, success_url_target = "mail:domain-aliases", "object.domain_id"
    cancel_url_name, cancel_url_target = "mail:domain-aliases", "object.domain_id"


class DomainAliasCreateView(AliasesTabCreateView):
    form_class = forms.DomainAliasForm
    action = actions.create_domain_alias
    title = gettext_lazy("New alias domain of %(name)s")
    submit_label = gettext_lazy("Add")


class DomainAliasDeleteView(AliasesTabObjectView, MailDeleteView):
    model = DomainAlias
    action, object_kwarg = actions.delete_domain_alias, "alias"


class PolicyFormView(MailPage, ObjectFormView):
    """Protocol access and filtering of one level (a customer or a domain), and what is in
    effect there."""

    template_name = "mail/policy.html"
    permission_required = perms.MAIL_VIEW
    form_class = forms.PolicyForm
    level_label: Any = ""

    def level(self) -> dict[str, Any]:
        raise NotImplementedError

    def own_row(self) -> Any:
        raise NotImplementedError

    def get_initial(self) -> dict[str, Any]:
        return forms.PolicyForm.initial_for(self.own_row())

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        level = self.level()
        parent = dict(level)
        if "domain" in parent:
            parent.pop("domain")
            kwargs["effective"] = policy.effective_protocols(**parent)
        else:
            # What the customer inherits: the chain above it.
            customer = level["customer"]
            upper = policy.customer_chain(customer)[:-1]
            kwargs["effective"] = policy.resolve_protocols_from(
                [
                    (policy.Source("customer", c.pk, c.name), p.protocol_access if p else None)
                    for c, p in upper
                ]
            )
        kwargs["level_label"] = self.level_label
        return kwargs

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_permission(perms.MAIL_MANAGE):
            raise PermissionDenied
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        effective = policy.effective_filtering(**self.level())
        labels = dict(choices.DMARC_FAILURE_CHOICES)
        context["effective_filtering"] = [
            (
                choices.FILTER_LABELS[f],
                labels.get(value, value) if f == "dmarc_failure" else _display(value),
                effective[f]["source"],
            )
            for f in choices.FILTER_FIELDS
            for value in [effective[f]["value"]]
        ]
        context["can_manage"] = self.request.user.has_permission(perms.MAIL_MANAGE)
        return context


class DomainPolicyView(DomainMixin, PolicyFormView):
    tab = "policy"
    action, object_kwarg = actions.update_domain_policy, "domain"
    level_label = gettext_lazy("this domain")
    success_message = gettext_lazy("Policy saved.")
    success_url_name, success_url_target = "mail:domain-policy", "object"

    def level(self) -> dict[str, Any]:
        domain = self.get_domain()
        return {"customer": domain.customer, "domain": domain}

    def own_row(self) -> DomainPolicy | None:
        return DomainPolicy.objects.filter(pk=self.get_domain().pk).first()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(self.domain_context())
        return context


class CustomerMailView(PolicyFormView):
    """A customer's mail defaults (inherited by its subtree) and its resource limits."""

    template_name = "mail/customer.html"
    model = Customer
    action, object_kwarg = actions.update_customer_policy, "customer"
    level_label = gettext_lazy("this customer")
    success_message = gettext_lazy("Mail defaults saved.")
    success_url_name, success_url_target = "mail:customer", "object"

    def level(self) -> dict[str, Any]:
        return {"customer": self.get_object()}

    def own_row(self) -> CustomerPolicy | None:
        return CustomerPolicy.objects.filter(pk=self.get_object().pk).first()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        from tenants.limits import RESOURCES

        context = super().get_context_data(**kwargs)
        customer = self.get_object()
        limit = ResourceLimit.objects.filter(pk=customer.pk).first()
        usage = subtree_usage([customer.path])[customer.path]
        context.update(
            {
                "customer": customer,
                "limit": limit,
                "usage": usage,
                "limit_form": forms.LimitForm(
                    actor=self.request.user,
                    initial={f"max_{r}": getattr(limit, f"max_{r}", None) for r in RESOURCES},
                ),
                "can_set_limits": self.request.user.has_permission(perms.CUSTOMERS_MANAGE),
            }
        )
        return context


class CustomerLimitView(MailPage, View):
    permission_required = perms.CUSTOMERS_MANAGE
    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        customer = scoped_object_or_404(Customer, request.user, kwargs["pk"])
        form = forms.LimitForm(request.POST, actor=request.user)
        if form.is_valid():
            try:
                limit_actions.set_limits(actor=request.user, customer=customer, **form.cleaned_data)
            except (ValidationError, PermissionDenied) as exc:
                for message in _error_messages(exc):
                    messages.error(request, message)
            else:
                messages.success(request, _("Limits saved."))
        else:
            _form_messages(request, form)
        return redirect("mail:customer", pk=customer.pk)


# ---------------------------------------------------------------------------- mailboxes


# The editable fields whose stored value is the form's initial value as it is.
MAILBOX_INITIAL = tuple(sorted(actions.MAILBOX_CHANGES - {"forward_to", "protocol_access"}))


class MailboxCreateView(MailFormView):
    parent_model = Domain
    parent_select_related = ("customer",)
    form_class = forms.MailboxForm
    action, parent_kwarg = actions.create_mailbox, "domain"
    title = gettext_lazy("New mailbox at %(name)s")
    submit_label = gettext_lazy("Create mailbox")
    success_message = gettext_lazy("Mailbox %(email)s created.")
    success_url_name = "mail:mailbox-edit"
    cancel_url_name, cancel_url_target = "mail:domain-detail", "parent"

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        domain = self.get_parent()
        kwargs["effective"] = policy.inherited_protocols(customer=domain.customer, domain=domain)
        kwargs["domain"] = domain
        return kwargs

    def get_initial(self) -> dict[str, Any]:
        return {"quota_mb": self.get_parent().default_quota_mb}


class MailboxFormView(MailFormView):
    """A page about one mailbox (its domain and customer read with it)."""

    model = Mailbox
    select_related = ("domain", "customer")
    object_kwarg = "mailbox"
    success_url_name = cancel_url_name = "mail:mailbox-edit"
    success_url_target = "object"


class MailboxEditView(MailboxFormView):
    """The mailbox form: protocol access as one grid showing what is in effect and why."""

    template_name = "mail/mailbox_form.html"
    permission_required = perms.MAIL_VIEW
    form_class = forms.MailboxEditForm
    action = actions.update_mailbox
    initial_from_object = MAILBOX_INITIAL
    success_message = gettext_lazy("Mailbox saved.")

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_permission(perms.MAIL_MANAGE):
            raise PermissionDenied
        return super().post(request, *args, **kwargs)

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        m = self.get_object()
        kwargs["effective"] = policy.inherited_protocols(customer=m.customer, domain=m.domain)
        return kwargs

    def get_initial(self) -> dict[str, Any]:
        initial = super().get_initial()
        m = self.get_object()
        initial["forward_to"] = "\n".join(m.forward_to or [])
        for code, value in policy.own_protocols(m.protocol_access).items():
            initial[f"access_{code}"] = value
        return initial

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["mailbox"] = self.get_object()
        context["can_manage"] = self.request.user.has_permission(perms.MAIL_MANAGE)
        return context


class MailboxPasswordView(MailboxFormView):
    form_class = forms.PasswordForm
    action = actions.set_mailbox_password
    title = gettext_lazy("New password for %(email)s")
    submit_label = gettext_lazy("Set password")
    success_message = gettext_lazy("Password changed.")

    def get_form_kwargs(self) -> dict[str, Any]:
        m = self.get_object()
        return {
            **super().get_form_kwargs(),
            "local_part": m.local_part,
            "domain_name": m.domain.name,
        }


class MailboxDeleteView(MailboxFormView, MailDeleteView):
    action = actions.delete_mailbox
    success_message = gettext_lazy("Mailbox deleted.")
    success_url_name, success_url_target = "mail:domain-detail", "object.domain_id"


class MailboxBulkView(DomainMixin, BulkActionView):
    """Ticked mailboxes of a domain's list: enable, disable, or delete after a confirmation."""

    permission_required = perms.MAIL_MANAGE
    bulk_model = Mailbox
    confirm_template = "mail/bulk_confirm.html"
    bulk_actions = {
        "enable": (
            actions.enable_mailboxes,
            lambda n: ngettext("%(n)d mailbox enabled.", "%(n)d mailboxes enabled.", n) % {"n": n},
            False,
        ),
        "disable": (
            actions.disable_mailboxes,
            lambda n: (
                ngettext("%(n)d mailbox disabled.", "%(n)d mailboxes disabled.", n) % {"n": n}
            ),
            False,
        ),
        "delete": (
            actions.delete_mailboxes,
            lambda n: ngettext("%(n)d mailbox deleted.", "%(n)d mailboxes deleted.", n) % {"n": n},
            True,
        ),
    }

    def scope_queryset(self) -> models.QuerySet:
        return super().scope_queryset().filter(domain=self.get_domain())

    def redirect_url(self) -> str:
        return reverse("mail:domain-detail", args=[self.get_domain().pk])

    def confirm_context(self, objects: list[Any], name: str) -> dict[str, Any]:
        return {"domain": self.get_domain()}


class MailboxWebmailTwoFactorView(MailboxFormView):
    """Webmail two-factor login: a new TOTP seed shown once (with its QR code), or off."""

    template_name = "mail/mailbox_webmail_2fa.html"
    form_class = forms.WebmailTwoFactorForm
    title = gettext_lazy("Webmail two-factor login for %(email)s")
    submit_label = gettext_lazy("Apply")

    def perform(self, form: Any) -> dict[str, str] | None:
        mailbox = self.get_object()
        if form.cleaned_data["operation"] == "disable":
            webmail.disable_webmail_two_factor(actor=self.request.user, mailbox=mailbox)
            return None
        return webmail.enable_webmail_two_factor(actor=self.request.user, mailbox=mailbox)

    def form_valid(self, form: Any) -> HttpResponse:
        try:
            enrolled = self.perform(form)
        except (ValidationError, PermissionDenied) as exc:
            add_errors(form, exc)
            return self.form_invalid(form)
        if enrolled is None:
            messages.success(self.request, _("Webmail asks for the password only."))
            return redirect(self.get_success_url())
        # Shown in this response only: the database keeps the seed encrypted.
        context = self.get_context_data(
            form=self.get_form_class()(actor=self.request.user),
            enrolled=enrolled,
            qr=qr.svg_data_uri(enrolled["uri"]),
        )
        return self.render_to_response(context)


class AutoResponderView(MailboxFormView):
    form_class = forms.AutoResponderForm
    action = actions.set_autoresponder
    title = gettext_lazy("Auto-responder of %(email)s")
    note = gettext_lazy("Never sent to mailing lists, bulk or automatic mail.")

    def get_initial(self) -> dict[str, Any]:
        row = getattr(self.get_object(), "autoresponder", None)
        if row is None:
            return {}
        return {
            f: getattr(row, f)
            for f in ("is_enabled", "subject", "body", "start_date", "end_date", "interval_days")
        }


class MailboxFiltersView(MailboxFormView):
    """The rule editor: rules listed, one added per submission; raw Sieve on its own form."""

    template_name = "mail/filters.html"
    permission_required = perms.MAIL_VIEW
    form_class = forms.SieveRuleForm
    success_url_name = "mail:mailbox-filters"

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_permission(perms.MAIL_MANAGE):
            raise PermissionDenied
        return super().post(request, *args, **kwargs)

    def rules_script(self) -> Any:
        return (
            self.get_object().sieve_scripts.filter(mode=choices.SIEVE_RULES, name="rules").first()
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        m = self.get_object()
        context.update(
            {
                "mailbox": m,
                "scripts": list(m.sieve_scripts.order_by("id")[:50]),
                "rules_script": self.rules_script(),
                "raw_form": kwargs.get("raw_form") or forms.SieveRawForm(actor=self.request.user),
                "can_manage": self.request.user.has_permission(perms.MAIL_MANAGE),
            }
        )
        return context

    def perform(self, form: forms.SieveRuleForm) -> Any:
        existing = self.rules_script()
        rule = form.rule()
        if existing is None:
            return actions.create_sieve_script(
                actor=self.request.user, mailbox=self.get_object(), name="rules", rules=[rule]
            )
        return actions.update_sieve_script(
            actor=self.request.user, sieve_script=existing, rules=[*existing.rules, rule]
        )


class MailboxRawSieveView(MailboxFiltersView):
    form_class = forms.SieveRawForm
    success_message = gettext_lazy("Filter saved.")

    def form_invalid(self, form: Any) -> HttpResponse:
        return self.render_to_response(
            self.get_context_data(form=forms.SieveRuleForm(actor=self.request.user), raw_form=form)
        )

    def perform(self, form: forms.SieveRawForm) -> Any:
        data = form.cleaned_data
        fields = {
            "mode": choices.SIEVE_RAW,
            "script": data["script"],
            "is_active": data["is_active"],
        }
        existing = self.get_object().sieve_scripts.filter(name=data["name"]).first()
        if existing is None:
            return actions.create_sieve_script(
                actor=self.request.user, mailbox=self.get_object(), name=data["name"], **fields
            )
        return actions.update_sieve_script(actor=self.request.user, sieve_script=existing, **fields)


class SieveScriptSwitchView(MailPage, ObjectMixin, View):
    """POST: make this filter the mailbox's active one, or switch it off (``active``)."""

    model = SieveScript
    permission_required = perms.MAIL_MANAGE
    http_method_names = ["post"]
    active = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        script = self.get_object()
        try:
            actions.set_sieve_script_active(
                actor=request.user, sieve_script=script, active=self.active
            )
        except (ValidationError, PermissionDenied) as exc:
            for message in _error_messages(exc):
                messages.error(request, message)
        else:
            text = (
                _("Filter “%(name)s” is now active.")
                if self.active
                else _("Filter “%(name)s” is switched off.")
            )
            messages.success(request, text % {"name": script.name})
        return redirect("mail:mailbox-filters", pk=script.mailbox_id)


# ------------------------------------------------------------------------------ aliases


class AliasCreateView(AliasesTabCreateView):
    form_class = forms.AliasForm
    action = actions.create_alias
    title = gettext_lazy("New alias or group at %(name)s")
    submit_label = gettext_lazy("Create")

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "domain": self.get_parent()}


class AliasFormView(AliasesTabObjectView):
    model = Alias
    object_kwarg = "alias"


class AliasEditView(AliasFormView):
    form_class = forms.AliasEditForm
    action = actions.update_alias
    initial_from_object = ("kind", "name", "is_enabled", "hide_from_address_book")
    title = gettext_lazy("Edit %(email)s")

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "domain": self.get_object().domain}

    def get_initial(self) -> dict[str, Any]:
        return {**super().get_initial(), "targets": "\n".join(self.get_object().targets)}


class AliasDeleteView(AliasFormView, MailDeleteView):
    action = actions.delete_alias
    success_message = gettext_lazy("Alias deleted.")


# -------------------------------------------------------------------- search, bulk, export


class MailboxSearchView(MailPage, TemplateView):
    """Mailboxes across the administrator's whole subtree, by address prefix."""

    template_name = "mail/mailbox_search.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        query = search_prefix(_query(self.request))
        mailboxes = scoping.scope_queryset(
            Mailbox.objects.select_related("domain", "customer"), self.request.user
        )
        if query:
            mailboxes = mailboxes.filter(email__startswith=query)
            fields: tuple[str, ...] = ("email",)
        else:
            fields = ("customer_path", "email")
        page = paging.page(mailboxes, fields, self.request.GET.get("cursor"), PAGE_SIZE)
        context.update({"page": page, "mailboxes": page.items, "query": query})
        return context


class CsvImportView(MailPage, ActionFormView):
    """Upload a CSV: the dry run lists every row's errors; "apply" starts the one job."""

    template_name = "mail/import.html"
    permission_required = perms.MAIL_MANAGE
    form_class = forms.CsvImportForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        # Rows name existing domains: say so before someone uploads into nothing.
        domains = scoping.scope_queryset(Domain.objects.all(), self.request.user)
        context["has_domains"] = domains.exists()
        return context

    def form_valid(self, form: Any) -> HttpResponse:
        upload = form.cleaned_data["file"]
        if upload.size > csv_import.MAX_BYTES:
            form.add_error("file", _("The file is larger than 20 MB."))
            return self.form_invalid(form)
        data = upload.read()
        apply = "apply" in self.request.POST
        try:
            if apply:
                created, report = csv_import.request_import(actor=self.request.user, data=data)
            else:
                created, report = None, csv_import.dry_run(data, actor=self.request.user)
        except (ValidationError, PermissionDenied) as exc:
            add_errors(form, exc)
            return self.form_invalid(form)
        if created is not None:
            messages.success(
                self.request,
                _("Import started as job %(job)d; it applies all rows or none.")
                % {"job": created.job_id},
            )
            return redirect("mail:import")
        return self.render_to_response(
            self.get_context_data(form=form, report=report, applied=apply)
        )


class ExportView(MailPage, View):
    """CSV of a domain's (or the whole subtree's) mailboxes and aliases."""

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> StreamingHttpResponse:
        mailboxes = scoping.scope_queryset(Mailbox.objects.all(), request.user)
        aliases = scoping.scope_queryset(Alias.objects.all(), request.user)
        name = "mail-export.csv"
        if "pk" in kwargs:
            domain = scoped_object_or_404(Domain, request.user, kwargs["pk"])
            mailboxes, aliases = mailboxes.filter(domain=domain), aliases.filter(domain=domain)
            name = f"{domain.name}.csv"
        response = StreamingHttpResponse(
            csv_import.export_rows(mailboxes, aliases), content_type="text/csv"
        )
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


class AddressBookExportView(MailPage, View):
    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> StreamingHttpResponse:
        customer = scoped_object_or_404(Customer, request.user, kwargs["pk"])
        response = StreamingHttpResponse(
            addressbook.export(customer), content_type="text/vcard; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="addressbook-{customer.pk}.vcf"'
        return response
