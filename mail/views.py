"""Portal pages of the mail app: domains with their tabs, mailboxes, aliases, policies, import.

Views are thin: objects are looked up through the scoping rule (outside scope is 404),
lists are keyset-paged (``?cursor=``) on indexed orderings, and valid forms go to
:mod:`mail.actions` with ``actor=request.user``; their errors come back as form errors.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import Count, OuterRef, Subquery
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views import View
from django.views.generic import TemplateView

from tenants import limit_actions
from tenants import permissions as perms
from tenants.limits import ResourceLimit
from tenants.models import Customer
from ums import scoping
from ums.portal.views import ActionFormView, PortalMixin, apply_validation_error

from . import actions, addressbook, choices, csv_import, dkim, forms, paging, policy
from .filtersets import search_prefix
from .models import Alias, CustomerPolicy, DkimKey, Domain, DomainAlias, DomainPolicy, Mailbox

PAGE_SIZE = 50


def _get(model: type[models.Model], request: HttpRequest, pk: Any, **extra: Any) -> Any:
    """The object with ``pk`` if in the user's scope; 404 otherwise (absurd ids included)."""
    if not 0 < int(pk) < 2**63:
        raise Http404
    queryset = model._default_manager.all()
    if extra.get("select_related"):
        queryset = queryset.select_related(*extra["select_related"])
    return scoping.get_in_scope_or_404(queryset, request.user, pk=pk)


def _query(request: HttpRequest) -> str:
    form = forms.SearchForm(request.GET)
    if not form.is_valid():
        return ""
    return form.cleaned_data["q"].strip()


def _error_messages(exc: ValidationError | PermissionDenied) -> list[str]:
    if isinstance(exc, ValidationError):
        return list(exc.messages)
    return [str(exc) or _("Permission denied.")]


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


class DomainMixin(MailPage):
    tab = ""

    def get_domain(self) -> Domain:
        if not hasattr(self, "_domain"):
            self._domain = _get(
                Domain, self.request, self.kwargs["pk"], select_related=["customer"]
            )
        return self._domain

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
            for errors in form.errors.values():
                for message in errors:
                    messages.error(request, message)
        return redirect("mail:domain-dkim", pk=domain.pk)


class DomainCreateView(ActionFormView):
    template_name = "mail/form.html"
    permission_required = perms.MAIL_MANAGE
    form_class = forms.DomainForm

    def get_initial(self) -> dict[str, Any]:
        customer = self.request.GET.get("customer", "")
        if customer.isdigit() and len(customer) < 19:
            return {"customer": int(customer)}
        return {"customer": self.request.user.customer_id}

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(
            {
                "title": _("New domain"),
                "submit_label": _("Create domain"),
                "cancel": reverse("mail:home"),
            }
        )
        return context

    def perform(self, form: forms.DomainForm) -> Domain:
        data = dict(form.cleaned_data)
        data["contact_email"] = data["contact_email"] or None
        domain = actions.create_domain(actor=self.request.user, **data)
        messages.success(self.request, _("Domain “%(name)s” created.") % {"name": domain})
        return domain

    def get_success_url(self) -> str:
        return reverse("mail:domain-detail", args=[self.result.pk])


class DomainEditView(DomainMixin, ActionFormView):
    template_name = "mail/form.html"
    permission_required = perms.MAIL_MANAGE
    form_class = forms.DomainEditForm

    def get_initial(self) -> dict[str, Any]:
        d = self.get_domain()
        return {
            "is_enabled": d.is_enabled,
            "default_quota_mb": d.default_quota_mb,
            "catch_all": d.catch_all,
            "description": d.description,
        }

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        domain = self.get_domain()
        context.update(
            {
                "domain": domain,
                "title": _("Edit %(name)s") % {"name": domain},
                "submit_label": _("Save"),
                "cancel": reverse("mail:domain-detail", args=[domain.pk]),
            }
        )
        return context

    def perform(self, form: forms.DomainEditForm) -> Domain:
        return actions.update_domain(
            actor=self.request.user, domain=self.get_domain(), **form.cleaned_data
        )

    def get_success_url(self) -> str:
        return reverse("mail:domain-detail", args=[self.result.pk])


class ConfirmDeleteView(ActionFormView):
    """A confirmation page whose POST deletes ``get_target()`` through an action."""

    template_name = "mail/confirm.html"
    permission_required = perms.MAIL_MANAGE
    form_class = forms.ConfirmForm

    def get_target(self) -> Any:
        raise NotImplementedError

    def cancel_url(self) -> str:
        raise NotImplementedError

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        target = self.get_target()
        context.update(
            {
                "title": _("Delete %(name)s?") % {"name": target},
                "target": target,
                "cancel": self.cancel_url(),
            }
        )
        return context


class DomainDeleteView(DomainMixin, ConfirmDeleteView):
    permission_required = perms.MAIL_MANAGE

    def get_target(self) -> Domain:
        return self.get_domain()

    def cancel_url(self) -> str:
        return reverse("mail:domain-detail", args=[self.get_domain().pk])

    def perform(self, form: Any) -> None:
        actions.delete_domain(actor=self.request.user, domain=self.get_domain())
        messages.success(self.request, _("Domain deleted."))

    def get_success_url(self) -> str:
        return reverse("mail:home")


class DomainAliasCreateView(DomainMixin, ActionFormView):
    template_name = "mail/form.html"
    permission_required = perms.MAIL_MANAGE
    form_class = forms.DomainAliasForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        domain = self.get_domain()
        context.update(
            {
                "domain": domain,
                "title": _("New alias domain of %(name)s") % {"name": domain},
                "submit_label": _("Add"),
                "cancel": reverse("mail:domain-aliases", args=[domain.pk]),
            }
        )
        return context

    def perform(self, form: Any) -> DomainAlias:
        return actions.create_domain_alias(
            actor=self.request.user, domain=self.get_domain(), name=form.cleaned_data["name"]
        )

    def get_success_url(self) -> str:
        return reverse("mail:domain-aliases", args=[self.get_domain().pk])


class DomainAliasDeleteView(MailPage, ConfirmDeleteView):
    permission_required = perms.MAIL_MANAGE

    def get_target(self) -> DomainAlias:
        if not hasattr(self, "_target"):
            self._target = _get(DomainAlias, self.request, self.kwargs["pk"])
        return self._target

    def cancel_url(self) -> str:
        return reverse("mail:domain-aliases", args=[self.get_target().domain_id])

    def perform(self, form: Any) -> None:
        actions.delete_domain_alias(actor=self.request.user, alias=self.get_target())

    def get_success_url(self) -> str:
        return self.cancel_url()


class PolicyFormMixin(ActionFormView):
    template_name = "mail/policy.html"
    permission_required = perms.MAIL_VIEW
    form_class = forms.PolicyForm

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
        return kwargs

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_permission(perms.MAIL_MANAGE):
            raise PermissionDenied
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        level = self.level()
        effective = policy.effective_filtering(**level)
        context["effective_filtering"] = [
            (choices.FILTER_LABELS[f], _display(effective[f]["value"]), effective[f]["source"])
            for f in choices.FILTER_FIELDS
        ]
        context["effective_protocols"] = [
            (choices.PROTOCOL_LABELS[c], v["allowed"], v["source"])
            for c, v in policy.effective_protocols(**level).items()
        ]
        context["can_manage"] = self.request.user.has_permission(perms.MAIL_MANAGE)
        return context


class DomainPolicyView(DomainMixin, PolicyFormMixin):
    tab = "policy"

    def level(self) -> dict[str, Any]:
        domain = self.get_domain()
        return {"customer": domain.customer, "domain": domain}

    def own_row(self) -> DomainPolicy | None:
        return DomainPolicy.objects.filter(pk=self.get_domain().pk).first()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(self.domain_context())
        return context

    def perform(self, form: forms.PolicyForm) -> DomainPolicy:
        row = actions.update_domain_policy(
            actor=self.request.user, domain=self.get_domain(), **form.action_fields()
        )
        messages.success(self.request, _("Policy saved."))
        return row

    def get_success_url(self) -> str:
        return reverse("mail:domain-policy", args=[self.get_domain().pk])


class CustomerMailView(MailPage, PolicyFormMixin):
    """A customer's mail defaults (inherited by its subtree) and its resource limits."""

    template_name = "mail/customer.html"

    def get_customer(self) -> Customer:
        if not hasattr(self, "_customer"):
            self._customer = _get(Customer, self.request, self.kwargs["pk"])
        return self._customer

    def level(self) -> dict[str, Any]:
        return {"customer": self.get_customer()}

    def own_row(self) -> CustomerPolicy | None:
        return CustomerPolicy.objects.filter(pk=self.get_customer().pk).first()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        from .limits import usage_of_subtrees

        context = super().get_context_data(**kwargs)
        customer = self.get_customer()
        limit = ResourceLimit.objects.filter(pk=customer.pk).first()
        usage = usage_of_subtrees([customer.path])[customer.path]
        context.update(
            {
                "customer": customer,
                "limit": limit,
                "usage": usage,
                "limit_form": forms.LimitForm(
                    actor=self.request.user,
                    initial={
                        f"max_{r}": getattr(limit, f"max_{r}", None)
                        for r in ("domains", "mailboxes", "aliases", "quota_gb")
                    },
                ),
                "can_set_limits": self.request.user.has_permission(perms.CUSTOMERS_MANAGE),
            }
        )
        return context

    def perform(self, form: forms.PolicyForm) -> CustomerPolicy:
        row = actions.update_customer_policy(
            actor=self.request.user, customer=self.get_customer(), **form.action_fields()
        )
        messages.success(self.request, _("Mail defaults saved."))
        return row

    def get_success_url(self) -> str:
        return reverse("mail:customer", args=[self.get_customer().pk])


class CustomerLimitView(MailPage, View):
    permission_required = perms.CUSTOMERS_MANAGE
    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        customer = _get(Customer, request, kwargs["pk"])
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
            for errors in form.errors.values():
                for message in errors:
                    messages.error(request, message)
        return redirect("mail:customer", pk=customer.pk)


# ---------------------------------------------------------------------------- mailboxes


class MailboxCreateView(DomainMixin, ActionFormView):
    template_name = "mail/form.html"
    permission_required = perms.MAIL_MANAGE
    form_class = forms.MailboxForm

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        domain = self.get_domain()
        kwargs["effective"] = policy.inherited_protocols(customer=domain.customer, domain=domain)
        return kwargs

    def get_initial(self) -> dict[str, Any]:
        return {"quota_mb": self.get_domain().default_quota_mb}

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        domain = self.get_domain()
        context.update(
            {
                "domain": domain,
                "title": _("New mailbox at %(name)s") % {"name": domain},
                "submit_label": _("Create mailbox"),
                "cancel": reverse("mail:domain-detail", args=[domain.pk]),
            }
        )
        return context

    def perform(self, form: forms.MailboxForm) -> Mailbox:
        data = form.action_fields()
        mailbox = actions.create_mailbox(actor=self.request.user, domain=self.get_domain(), **data)
        messages.success(self.request, _("Mailbox %(email)s created.") % {"email": mailbox.email})
        return mailbox

    def get_success_url(self) -> str:
        return reverse("mail:mailbox-edit", args=[self.result.pk])


class MailboxMixin(MailPage):
    def get_mailbox(self) -> Mailbox:
        if not hasattr(self, "_mailbox"):
            self._mailbox = _get(
                Mailbox, self.request, self.kwargs["pk"], select_related=["domain", "customer"]
            )
        return self._mailbox


class MailboxEditView(MailboxMixin, ActionFormView):
    """The mailbox form, showing the effective protocol access and where it comes from."""

    template_name = "mail/mailbox_form.html"
    permission_required = perms.MAIL_VIEW
    form_class = forms.MailboxEditForm

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_permission(perms.MAIL_MANAGE):
            raise PermissionDenied
        return super().post(request, *args, **kwargs)

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        m = self.get_mailbox()
        kwargs["effective"] = policy.inherited_protocols(customer=m.customer, domain=m.domain)
        return kwargs

    def get_initial(self) -> dict[str, Any]:
        m = self.get_mailbox()
        initial = {
            f: getattr(m, f)
            for f in (
                "display_name",
                "quota_mb",
                "is_enabled",
                "read_only",
                "can_delete",
                "can_send",
                "retention_days",
                "forward_keep_copy",
                "hide_from_address_book",
            )
        }
        initial["forward_to"] = "\n".join(m.forward_to or [])
        for code, value in policy.own_protocols(m.protocol_access).items():
            initial[f"access_{code}"] = value
        return initial

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        m = self.get_mailbox()
        context.update(
            {
                "mailbox": m,
                "domain": m.domain,
                "effective": [
                    (choices.PROTOCOL_LABELS[c], v["allowed"], v["source"])
                    for c, v in policy.mailbox_protocols(m).items()
                ],
                "can_manage": self.request.user.has_permission(perms.MAIL_MANAGE),
            }
        )
        return context

    def perform(self, form: forms.MailboxEditForm) -> Mailbox:
        mailbox = actions.update_mailbox(
            actor=self.request.user, mailbox=self.get_mailbox(), **form.action_fields()
        )
        messages.success(self.request, _("Mailbox saved."))
        return mailbox

    def get_success_url(self) -> str:
        return reverse("mail:mailbox-edit", args=[self.result.pk])


class MailboxPasswordView(MailboxMixin, ActionFormView):
    template_name = "mail/form.html"
    permission_required = perms.MAIL_MANAGE
    form_class = forms.PasswordForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        m = self.get_mailbox()
        context.update(
            {
                "domain": m.domain,
                "title": _("New password for %(email)s") % {"email": m.email},
                "submit_label": _("Set password"),
                "cancel": reverse("mail:mailbox-edit", args=[m.pk]),
            }
        )
        return context

    def perform(self, form: Any) -> None:
        actions.set_mailbox_password(
            actor=self.request.user,
            mailbox=self.get_mailbox(),
            password=form.cleaned_data["password"],
        )
        messages.success(self.request, _("Password changed."))

    def get_success_url(self) -> str:
        return reverse("mail:mailbox-edit", args=[self.get_mailbox().pk])


class MailboxDeleteView(MailboxMixin, ConfirmDeleteView):
    permission_required = perms.MAIL_MANAGE

    def get_target(self) -> Mailbox:
        return self.get_mailbox()

    def cancel_url(self) -> str:
        return reverse("mail:mailbox-edit", args=[self.get_mailbox().pk])

    def perform(self, form: Any) -> None:
        actions.delete_mailbox(actor=self.request.user, mailbox=self.get_mailbox())
        messages.success(self.request, _("Mailbox deleted."))

    def get_success_url(self) -> str:
        return reverse("mail:domain-detail", args=[self.get_mailbox().domain_id])


class AutoResponderView(MailboxMixin, ActionFormView):
    template_name = "mail/form.html"
    permission_required = perms.MAIL_MANAGE
    form_class = forms.AutoResponderForm

    def get_initial(self) -> dict[str, Any]:
        row = getattr(self.get_mailbox(), "autoresponder", None)
        if row is None:
            return {}
        return {
            f: getattr(row, f)
            for f in ("is_enabled", "subject", "body", "start_date", "end_date", "interval_days")
        }

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        m = self.get_mailbox()
        context.update(
            {
                "domain": m.domain,
                "title": _("Auto-responder of %(email)s") % {"email": m.email},
                "submit_label": _("Save"),
                "cancel": reverse("mail:mailbox-edit", args=[m.pk]),
                "note": _("Never sent to mailing lists, bulk or automatic mail."),
            }
        )
        return context

    def perform(self, form: Any) -> Any:
        return actions.set_autoresponder(
            actor=self.request.user, mailbox=self.get_mailbox(), **form.cleaned_data
        )

    def get_success_url(self) -> str:
        return reverse("mail:mailbox-edit", args=[self.get_mailbox().pk])


class MailboxFiltersView(MailboxMixin, ActionFormView):
    """The rule editor: rules listed, one added per submission; raw Sieve on its own form."""

    template_name = "mail/filters.html"
    permission_required = perms.MAIL_VIEW
    form_class = forms.SieveRuleForm

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_permission(perms.MAIL_MANAGE):
            raise PermissionDenied
        return super().post(request, *args, **kwargs)

    def rules_script(self) -> Any:
        return (
            self.get_mailbox().sieve_scripts.filter(mode=choices.SIEVE_RULES, name="rules").first()
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        m = self.get_mailbox()
        context.update(
            {
                "mailbox": m,
                "domain": m.domain,
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
                actor=self.request.user, mailbox=self.get_mailbox(), name="rules", rules=[rule]
            )
        return actions.update_sieve_script(
            actor=self.request.user, sieve_script=existing, rules=[*existing.rules, rule]
        )

    def get_success_url(self) -> str:
        return reverse("mail:mailbox-filters", args=[self.get_mailbox().pk])


class MailboxRawSieveView(MailboxFiltersView):
    form_class = forms.SieveRawForm

    def form_invalid(self, form: Any) -> HttpResponse:
        return self.render_to_response(
            self.get_context_data(form=forms.SieveRuleForm(actor=self.request.user), raw_form=form)
        )

    def form_valid(self, form: Any) -> HttpResponse:
        data = form.cleaned_data
        existing = self.get_mailbox().sieve_scripts.filter(name=data["name"]).first()
        try:
            if existing is None:
                actions.create_sieve_script(
                    actor=self.request.user,
                    mailbox=self.get_mailbox(),
                    name=data["name"],
                    mode=choices.SIEVE_RAW,
                    script=data["script"],
                    is_active=data["is_active"],
                )
            else:
                actions.update_sieve_script(
                    actor=self.request.user,
                    sieve_script=existing,
                    mode=choices.SIEVE_RAW,
                    script=data["script"],
                    is_active=data["is_active"],
                )
        except (ValidationError, PermissionDenied) as exc:
            if isinstance(exc, ValidationError):
                apply_validation_error(form, exc)
            else:
                form.add_error(None, str(exc))
            return self.form_invalid(form)
        messages.success(self.request, _("Filter saved."))
        return redirect(self.get_success_url())


# ------------------------------------------------------------------------------ aliases


class AliasCreateView(DomainMixin, ActionFormView):
    template_name = "mail/form.html"
    permission_required = perms.MAIL_MANAGE
    form_class = forms.AliasForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        domain = self.get_domain()
        context.update(
            {
                "domain": domain,
                "title": _("New alias or group at %(name)s") % {"name": domain},
                "submit_label": _("Create"),
                "cancel": reverse("mail:domain-aliases", args=[domain.pk]),
            }
        )
        return context

    def perform(self, form: forms.AliasForm) -> Alias:
        return actions.create_alias(
            actor=self.request.user, domain=self.get_domain(), **form.action_fields()
        )

    def get_success_url(self) -> str:
        return reverse("mail:domain-aliases", args=[self.get_domain().pk])


class AliasMixin(MailPage):
    def get_alias(self) -> Alias:
        if not hasattr(self, "_alias"):
            self._alias = _get(Alias, self.request, self.kwargs["pk"], select_related=["domain"])
        return self._alias


class AliasEditView(AliasMixin, ActionFormView):
    template_name = "mail/form.html"
    permission_required = perms.MAIL_MANAGE
    form_class = forms.AliasEditForm

    def get_initial(self) -> dict[str, Any]:
        a = self.get_alias()
        return {
            "kind": a.kind,
            "name": a.name,
            "targets": "\n".join(a.targets),
            "is_enabled": a.is_enabled,
            "hide_from_address_book": a.hide_from_address_book,
        }

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        a = self.get_alias()
        context.update(
            {
                "domain": a.domain,
                "title": _("Edit %(email)s") % {"email": a.email},
                "submit_label": _("Save"),
                "cancel": reverse("mail:domain-aliases", args=[a.domain_id]),
            }
        )
        return context

    def perform(self, form: forms.AliasEditForm) -> Alias:
        return actions.update_alias(
            actor=self.request.user, alias=self.get_alias(), **form.action_fields()
        )

    def get_success_url(self) -> str:
        return reverse("mail:domain-aliases", args=[self.get_alias().domain_id])


class AliasDeleteView(AliasMixin, ConfirmDeleteView):
    permission_required = perms.MAIL_MANAGE

    def get_target(self) -> Alias:
        return self.get_alias()

    def cancel_url(self) -> str:
        return reverse("mail:domain-aliases", args=[self.get_alias().domain_id])

    def perform(self, form: Any) -> None:
        actions.delete_alias(actor=self.request.user, alias=self.get_alias())
        messages.success(self.request, _("Alias deleted."))

    def get_success_url(self) -> str:
        return self.cancel_url()


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
            if isinstance(exc, ValidationError):
                apply_validation_error(form, exc)
            else:
                form.add_error(None, str(exc))
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
            domain = _get(Domain, request, kwargs["pk"])
            mailboxes, aliases = mailboxes.filter(domain=domain), aliases.filter(domain=domain)
            name = f"{domain.name}.csv"
        response = StreamingHttpResponse(
            csv_import.export_rows(mailboxes, aliases), content_type="text/csv"
        )
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


class AddressBookExportView(MailPage, View):
    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> StreamingHttpResponse:
        customer = _get(Customer, request, kwargs["pk"])
        response = StreamingHttpResponse(
            addressbook.export(customer), content_type="text/vcard; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="addressbook-{customer.pk}.vcf"'
        return response
