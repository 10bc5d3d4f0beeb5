"""API endpoints of the mail app under /api/v1/mail/.

Viewsets are a queryset, serializers, a filterset and hooks calling :mod:`mail.actions`;
scoping comes from the ums base classes. Lists page by keyset on indexed, unique orderings
(``(customer_path, email)`` for addresses, ``email`` when searching by address prefix,
``(domain, local_part)`` within a domain) and run a fixed number of queries per page.
"""

from __future__ import annotations

import datetime
from operator import itemgetter
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.http import Http404, StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from djangorestframework_camel_case.render import CamelCaseBrowsableAPIRenderer
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import ISO_8601, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils.urls import replace_query_param

from tenants import limit_actions
from tenants import permissions as perms
from tenants.limits import ResourceLimit
from tenants.models import Customer
from ums import scoping
from ums.api.filters import FilterBackend
from ums.api.viewsets import ScopedModelViewSet, ScopedReadOnlyViewSet, ScopedViewSetMixin

from .. import actions, addressbook, csv_import, dkim, passwords, webmail
from ..filtersets import (
    AliasFilterSet,
    AutoResponderFilterSet,
    DkimKeyFilterSet,
    DomainAliasFilterSet,
    DomainFilterSet,
    MailboxFilterSet,
    ScopedMailFilterSet,
    SieveScriptFilterSet,
)
from ..models import (
    Alias,
    AutoResponder,
    CsvImport,
    CustomerPolicy,
    DkimKey,
    Domain,
    DomainAlias,
    DomainPolicy,
    Mailbox,
    SieveScript,
)
from ..sieve import parse_error
from ..signing import signing_keys
from . import serializers as s
from .pagination import CompositeKeysetPagination, decode_cursor, encode_cursor
from .renderers import CamelCased, FastCamelCaseJSONRenderer, camel


class MailViewSetMixin:
    """Keyset pages on ``keyset_ordering`` and the mail permissions."""

    pagination_class = CompositeKeysetPagination
    renderer_classes = [FastCamelCaseJSONRenderer, CamelCaseBrowsableAPIRenderer]
    permission_area = "mail"
    keyset_ordering: tuple[str, ...] = ("id",)
    request: Request

    def get_keyset_ordering(self) -> tuple[str, ...]:
        return self.keyset_ordering


class ValuesListMixin:
    """Lists built from ``.values()`` rows instead of model instances and a serializer.

    For the big tables (a page of mailboxes is the most requested thing in the API): the
    same JSON as the list serializer, at a fraction of the cost. ``list_fields`` maps each
    output field to its column.
    """

    list_fields: dict[str, str] = {}
    list_datetimes: tuple[str, ...] = ()
    #: Output fields computed from their column's value (never output as read).
    list_derived: dict[str, Any] = {}
    request: Request

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        ordering = self.get_keyset_ordering()  # type: ignore[attr-defined]
        columns = tuple(dict.fromkeys([*self.list_fields.values(), *ordering]))
        page = self.paginate_queryset(self.values_queryset(columns))  # type: ignore[attr-defined]
        names = [camel(name) for name in self.list_fields]
        picks = [self.list_fields[name] for name in self.list_fields]
        # One C call per row instead of a Python loop over the columns.
        pick = itemgetter(*picks) if len(picks) > 1 else (lambda row: (row[picks[0]],))
        stamps = [camel(name) for name in self.list_datetimes]
        derived = [(camel(name), func) for name, func in self.list_derived.items()]
        iso = iso_stamps()
        rows = CamelCased()
        for row in page:
            item = dict(zip(names, pick(row), strict=True))
            for name in stamps:
                item[name] = iso(item[name])
            for name, func in derived:
                item[name] = func(item[name])
            rows.append(item)
        return self.get_paginated_response(rows)  # type: ignore[attr-defined]

    def values_queryset(self, columns: tuple[str, ...]) -> models.QuerySet:
        """The scoped, filtered ``.values(*columns)`` queryset of the list.

        ``values()`` resolves every column anew on each call (about 5 % of a first page's
        CPU). When nothing but scoping applies (the viewset's own ``get_queryset`` is the
        scoping one and no query parameter names a filter), the scope filter is put on a
        ``values()`` queryset made once per class and columns instead: the same WHERE,
        columns and rows. The kept queryset is only ever cloned, never evaluated.
        """
        view: Any = self
        backends = [backend() for backend in view.filter_backends]
        plain = type(self).get_queryset is ScopedViewSetMixin.get_queryset and all(
            type(b) is FilterBackend and not b.asked(self.request, view.queryset, view)
            for b in backends
        )
        if not plain or not isinstance(view.queryset, models.QuerySet):
            return view.filter_queryset(view.get_queryset()).values(*columns)
        key = (type(self), columns)
        template = _VALUES_TEMPLATES.get(key)
        if template is None:
            template = _VALUES_TEMPLATES[key] = view.queryset.all().values(*columns)
        return scoping.scope_queryset(template, self.request.user)


# (viewset class, columns) -> an unevaluated values() queryset; a handful of entries.
_VALUES_TEMPLATES: dict[tuple[type, tuple[str, ...]], models.QuerySet] = {}


def iso_stamps() -> Any:
    """DRF's ``DateTimeField().to_representation`` in the current zone, for one page.

    The zone is fixed once per page; an aware datetime (what PostgreSQL's ``timestamptz``
    gives) takes a short path with the same output (ISO 8601, ``Z`` for UTC), anything
    else goes through DRF's field itself.
    """
    field = serializers.DateTimeField(default_timezone=timezone.get_current_timezone())
    zone = field.timezone
    utc = zone is datetime.UTC or getattr(zone, "key", None) in {"UTC", "Etc/UTC"}
    if getattr(field, "format", api_settings.DATETIME_FORMAT) != ISO_8601:
        return field.to_representation

    def iso(value: Any) -> str | None:
        # A UTC value (what PostgreSQL's timestamptz gives) in a UTC deployment, the usual
        # case: astimezone would keep every field and the +00:00 offset, so only the text
        # is left to write.
        if utc and type(value) is datetime.datetime and value.tzinfo is datetime.UTC:
            text = value.isoformat()
            return text[:-6] + "Z" if text.endswith("+00:00") else text
        if not value or value.utcoffset() is None:
            return field.to_representation(value) if value else None
        try:
            text = value.astimezone(zone).isoformat()
        except OverflowError:
            return field.to_representation(value)  # DRF's own error
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    return iso


class MailModelViewSet(MailViewSetMixin, ScopedModelViewSet):
    update_serializer_class: type | None = None
    detail_serializer_class: type | None = None

    def get_serializer_class(self) -> type:
        if self.action in {"update", "partial_update"} and self.update_serializer_class:
            return self.update_serializer_class
        if self.action == "retrieve" and self.detail_serializer_class:
            return self.detail_serializer_class
        return super().get_serializer_class()


def _address_ordering(request: Request) -> tuple[str, ...]:
    if request.query_params.get("search"):
        return ("email",)
    if request.query_params.get("domain"):
        return ("domain_id", "local_part")
    return ("customer_path", "email")


# ------------------------------------------------------------------------------ domains


class DomainViewSet(MailModelViewSet):
    queryset = Domain.objects.all()
    serializer_class = s.DomainSerializer
    update_serializer_class = s.DomainUpdateSerializer
    filterset_class = DomainFilterSet
    keyset_ordering = ("name",)

    def create_object(self, data: dict[str, Any]) -> Domain:
        return actions.create_domain(actor=self.request.user, **data)

    def update_object(self, instance: Domain, data: dict[str, Any]) -> Domain:
        return actions.update_domain(actor=self.request.user, domain=instance, **data)

    def delete_object(self, instance: Domain) -> None:
        actions.delete_domain(actor=self.request.user, domain=instance)

    @extend_schema(responses=s.DnsRecordSerializer(many=True))
    @action(detail=True, methods=["get"])
    def dns(self, request: Request, pk: str | None = None) -> Response:
        """The DNS records to publish: DKIM keys (active and retired), suggested SPF, DMARC."""
        domain = self.get_object()
        records = []
        signing = signing_keys([domain.pk]).get(domain.pk, ("", ""))[0]
        for key in DkimKey.objects.filter(domain=domain).order_by("-id"):
            records.append(
                {
                    "purpose": f"dkim-{key.state}",
                    "dns_status": key.dns_status,
                    "signing": key.selector == signing,
                    "name": dkim.record_name(key.selector, domain.name),
                    "type": "TXT",
                    "value": dkim.record_value(key.public_key),
                    "zone": dkim.zone_line(key.selector, domain.name, key.public_key),
                }
            )
        records.append({"purpose": "spf", **dkim.spf_suggestion(domain.name)})
        records.append({"purpose": "dmarc", **dkim.dmarc_suggestion(domain.name)})
        return Response(s.DnsRecordSerializer(records, many=True).data)

    @extend_schema(request=None, responses={202: s.JobAcceptedSerializer})
    @action(detail=True, methods=["post"], url_path="dns/check")
    def dns_check(self, request: Request, pk: str | None = None) -> Response:
        """Queue a lookup of every DKIM key's TXT record; results land on the keys."""
        job = actions.check_dkim_dns(actor=request.user, domain=self.get_object())
        return Response({"job": job.pk}, status=status.HTTP_202_ACCEPTED)


class DomainAliasViewSet(MailModelViewSet):
    queryset = DomainAlias.objects.all()
    serializer_class = s.DomainAliasSerializer
    update_serializer_class = s.DomainAliasUpdateSerializer
    filterset_class = DomainAliasFilterSet
    keyset_ordering = ("name",)

    def create_object(self, data: dict[str, Any]) -> DomainAlias:
        return actions.create_domain_alias(actor=self.request.user, **data)

    def update_object(self, instance: DomainAlias, data: dict[str, Any]) -> DomainAlias:
        return actions.update_domain_alias(actor=self.request.user, alias=instance, **data)

    def delete_object(self, instance: DomainAlias) -> None:
        actions.delete_domain_alias(actor=self.request.user, alias=instance)


class DkimKeyViewSet(MailModelViewSet):
    """DKIM keys: POST generates a domain's first key, ``rotate`` replaces the active one."""

    queryset = DkimKey.objects.select_related("domain")
    serializer_class = s.DkimKeySerializer
    filterset_class = DkimKeyFilterSet
    http_method_names = ["get", "post", "delete", "head", "options"]

    def create_object(self, data: dict[str, Any]) -> DkimKey:
        return actions.generate_dkim_key(actor=self.request.user, **data)

    def delete_object(self, instance: DkimKey) -> None:
        actions.delete_dkim_key(actor=self.request.user, key=instance)

    @extend_schema(request=s.DkimRotateSerializer, responses=s.DkimKeySerializer)
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk: str | None = None) -> Response:
        key = self.get_object()
        serializer = s.DkimRotateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        new = actions.rotate_dkim_key(
            actor=request.user, domain=key.domain, **serializer.validated_data
        )
        return Response(s.DkimKeySerializer(new).data, status=status.HTTP_201_CREATED)


# ----------------------------------------------------------------------------- policies


class PolicyViewSetMixin(MailViewSetMixin):
    """A policy row keyed by its owner's id; reading a level without one shows defaults."""

    http_method_names = ["get", "patch", "delete", "head", "options"]
    owner_model: type[models.Model]

    def build_unsaved(self, owner: Any) -> Any:
        raise NotImplementedError

    def get_object(self) -> Any:
        try:
            return super().get_object()  # type: ignore[misc]
        except Http404:
            owner = scoping.get_in_scope_or_404(
                self.owner_model.objects.all(), self.request.user, pk=self.kwargs["pk"]
            )
            return self.build_unsaved(owner)


class CustomerPolicyViewSet(PolicyViewSetMixin, MailModelViewSet):
    """Protocol defaults and filtering policy of a customer (id = the customer's id)."""

    queryset = CustomerPolicy.objects.select_related("customer")
    serializer_class = s.CustomerPolicySerializer
    filterset_class = ScopedMailFilterSet
    owner_model = Customer
    keyset_ordering = ("customer_id",)

    def build_unsaved(self, owner: Customer) -> CustomerPolicy:
        return CustomerPolicy(customer=owner, customer_path=owner.path)

    def update_object(self, instance: CustomerPolicy, data: dict[str, Any]) -> CustomerPolicy:
        return actions.update_customer_policy(
            actor=self.request.user, customer=instance.customer, **data
        )

    def delete_object(self, instance: CustomerPolicy) -> None:
        actions.reset_policy(actor=self.request.user, row=instance)


class DomainPolicyViewSet(PolicyViewSetMixin, MailModelViewSet):
    """A domain's overrides of the inherited policy (id = the domain's id)."""

    queryset = DomainPolicy.objects.select_related("domain__customer")
    serializer_class = s.DomainPolicySerializer
    filterset_class = ScopedMailFilterSet
    owner_model = Domain
    keyset_ordering = ("domain_id",)

    def build_unsaved(self, owner: Domain) -> DomainPolicy:
        return DomainPolicy(
            domain=owner, customer=owner.customer, customer_path=owner.customer_path
        )

    def update_object(self, instance: DomainPolicy, data: dict[str, Any]) -> DomainPolicy:
        return actions.update_domain_policy(actor=self.request.user, domain=instance.domain, **data)

    def delete_object(self, instance: DomainPolicy) -> None:
        actions.reset_policy(actor=self.request.user, row=instance)


class ResourceLimitViewSet(PolicyViewSetMixin, MailModelViewSet):
    """Resource limits of a customer's subtree and what it uses (id = the customer's id)."""

    queryset = ResourceLimit.objects.all()
    serializer_class = s.ResourceLimitSerializer
    filterset_class = ScopedMailFilterSet
    owner_model = Customer
    keyset_ordering = ("customer_id",)
    required_permissions = {
        "list": perms.MAIL_VIEW,
        "retrieve": perms.MAIL_VIEW,
        "partial_update": perms.CUSTOMERS_MANAGE,
        "destroy": perms.CUSTOMERS_MANAGE,
    }

    def build_unsaved(self, owner: Customer) -> ResourceLimit:
        return ResourceLimit(customer=owner, customer_path=owner.path)

    def update_object(self, instance: ResourceLimit, data: dict[str, Any]) -> ResourceLimit:
        return limit_actions.set_limits(actor=self.request.user, customer=instance.customer, **data)

    def delete_object(self, instance: ResourceLimit) -> None:
        limit_actions.set_limits(
            actor=self.request.user,
            customer=instance.customer,
            max_domains=None,
            max_mailboxes=None,
            max_aliases=None,
            max_quota_gb=None,
            max_cloud_gb=None,
        )


# ---------------------------------------------------------------------------- mailboxes


class MailboxViewSet(ValuesListMixin, MailModelViewSet):
    queryset = Mailbox.objects.all()
    serializer_class = s.MailboxSerializer
    detail_serializer_class = s.MailboxDetailSerializer
    update_serializer_class = s.MailboxUpdateSerializer
    filterset_class = MailboxFilterSet

    def get_keyset_ordering(self) -> tuple[str, ...]:
        return _address_ordering(self.request)

    def get_serializer_class(self) -> type:
        if self.action == "set_password":
            return s.MailboxPasswordSerializer
        if self.action == "list":
            return s.MailboxListSerializer
        return super().get_serializer_class()

    list_fields = s.MailboxListSerializer.Meta.columns
    list_datetimes = ("created_at",)
    # Read from the hash column itself (no annotation: the page keeps its compiled SQL).
    list_derived = {"password_pending": lambda stored: stored == passwords.PENDING_HASH}

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        serializer.instance = actions.create_mailbox(
            actor=request.user, **serializer.validated_data
        )
        # The effective protocol access is on GET: a create answers what was stored.
        return Response(serializer.data, status=status.HTTP_201_CREATED)

    def update_object(self, instance: Mailbox, data: dict[str, Any]) -> Mailbox:
        return actions.update_mailbox(actor=self.request.user, mailbox=instance, **data)

    def delete_object(self, instance: Mailbox) -> None:
        actions.delete_mailbox(actor=self.request.user, mailbox=instance)

    @extend_schema(request=s.MailboxPasswordSerializer, responses={204: None})
    @action(detail=True, methods=["post"], url_path="set-password")
    def set_password(self, request: Request, pk: str | None = None) -> Response:
        mailbox = self.get_object()
        serializer = s.MailboxPasswordSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        actions.set_mailbox_password(
            actor=request.user, mailbox=mailbox, password=serializer.validated_data["password"]
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={201: s.WebmailTwoFactorSerializer, 204: None})
    @action(detail=True, methods=["post", "delete"], url_path="webmail-two-factor")
    def webmail_two_factor(self, request: Request, pk: str | None = None) -> Response:
        """POST: a new TOTP seed for webmail logins (shown once); DELETE: password only."""
        mailbox = self.get_object()
        if request.method == "DELETE":
            webmail.disable_webmail_two_factor(actor=request.user, mailbox=mailbox)
            return Response(status=status.HTTP_204_NO_CONTENT)
        enrolled = webmail.enable_webmail_two_factor(actor=request.user, mailbox=mailbox)
        return Response(s.WebmailTwoFactorSerializer(enrolled).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "text/csv"): str})
    @action(detail=False, methods=["get"])
    def export(self, request: Request) -> StreamingHttpResponse:
        """Mailboxes, then aliases and groups, as CSV (filters as for the list)."""
        mailboxes = self.filter_queryset(self.get_queryset())
        alias_filter = AliasFilterSet(
            request.query_params,
            queryset=scoping.scope_queryset(Alias.objects.all(), request.user),
            request=request,
        )
        if not alias_filter.is_valid():
            raise DjangoValidationError(alias_filter.errors.get_json_data())
        response = StreamingHttpResponse(
            csv_import.export_rows(mailboxes, alias_filter.qs), content_type="text/csv"
        )
        response["Content-Disposition"] = 'attachment; filename="mail-export.csv"'
        return response


class AliasViewSet(MailModelViewSet):
    """Aliases and distribution groups (``kind``)."""

    queryset = Alias.objects.all()
    serializer_class = s.AliasSerializer
    update_serializer_class = s.AliasUpdateSerializer
    filterset_class = AliasFilterSet

    def get_keyset_ordering(self) -> tuple[str, ...]:
        return _address_ordering(self.request)

    def create_object(self, data: dict[str, Any]) -> Alias:
        return actions.create_alias(actor=self.request.user, **data)

    def update_object(self, instance: Alias, data: dict[str, Any]) -> Alias:
        return actions.update_alias(actor=self.request.user, alias=instance, **data)

    def delete_object(self, instance: Alias) -> None:
        actions.delete_alias(actor=self.request.user, alias=instance)


class AutoResponderViewSet(MailModelViewSet):
    """One auto-responder per mailbox (id = the mailbox's id)."""

    queryset = AutoResponder.objects.select_related("mailbox")
    serializer_class = s.AutoResponderSerializer
    update_serializer_class = s.AutoResponderUpdateSerializer
    filterset_class = AutoResponderFilterSet
    keyset_ordering = ("mailbox_id",)

    def create_object(self, data: dict[str, Any]) -> AutoResponder:
        mailbox = data.pop("mailbox")
        if AutoResponder.objects.filter(pk=mailbox.pk).exists():
            raise DjangoValidationError(
                {"mailbox": _("This mailbox already has an auto-responder; change it instead.")}
            )
        return actions.set_autoresponder(actor=self.request.user, mailbox=mailbox, **data)

    def update_object(self, instance: AutoResponder, data: dict[str, Any]) -> AutoResponder:
        return actions.set_autoresponder(actor=self.request.user, mailbox=instance.mailbox, **data)

    def delete_object(self, instance: AutoResponder) -> None:
        actions.delete_autoresponder(actor=self.request.user, autoresponder=instance)


class SieveScriptViewSet(MailModelViewSet):
    """Sieve filters; ``check`` validates a script without saving it, ``activate`` and
    ``deactivate`` switch which one of a mailbox's filters runs."""

    queryset = SieveScript.objects.all()
    serializer_class = s.SieveScriptSerializer
    update_serializer_class = s.SieveScriptUpdateSerializer
    filterset_class = SieveScriptFilterSet

    def create_object(self, data: dict[str, Any]) -> Any:
        return actions.create_sieve_script(actor=self.request.user, **data)

    def update_object(self, instance: Any, data: dict[str, Any]) -> Any:
        return actions.update_sieve_script(actor=self.request.user, sieve_script=instance, **data)

    def delete_object(self, instance: Any) -> None:
        actions.delete_sieve_script(actor=self.request.user, sieve_script=instance)

    @extend_schema(request=None, responses=s.SieveScriptSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, pk: str | None = None) -> Response:
        """Make this the mailbox's active filter; the previously active one is switched off."""
        return self._set_active(True)

    @extend_schema(request=None, responses=s.SieveScriptSerializer)
    @action(detail=True, methods=["post"])
    def deactivate(self, request: Request, pk: str | None = None) -> Response:
        """Switch this filter off; the mailbox then runs no filter of its own."""
        return self._set_active(False)

    def _set_active(self, active: bool) -> Response:
        row = actions.set_sieve_script_active(
            actor=self.request.user, sieve_script=self.get_object(), active=active
        )
        return Response(s.SieveScriptSerializer(row, context=self.get_serializer_context()).data)

    @extend_schema(request=s.SieveCheckSerializer, responses=s.SieveCheckResultSerializer)
    @action(detail=False, methods=["post"])
    def check(self, request: Request) -> Response:
        serializer = s.SieveCheckSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        error = parse_error(serializer.validated_data["script"])
        return Response({"valid": error is None, "error": error})


# --------------------------------------------------------------------------- address book


class AddressBookViewSet(MailViewSetMixin, ScopedReadOnlyViewSet):
    """Organisations (customers) whose address book the caller may read; ``entries`` pages
    its mailboxes and groups by address, ``vcard`` exports them as vCard 4."""

    queryset = Customer.objects.all()
    serializer_class = s.AddressBookSerializer
    filterset_class = None
    required_permissions = {"list": perms.MAIL_VIEW, "retrieve": perms.MAIL_VIEW}

    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", str),
            OpenApiParameter("search", str),
            OpenApiParameter("pageSize", int),
        ],
        responses=s.AddressBookEntrySerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def entries(self, request: Request, pk: str | None = None) -> Response:
        customer = self.get_object()
        token = request.query_params.get("cursor") or ""
        after = decode_cursor(token, "addressbook", 1)[0] if token else ""
        if not isinstance(after, str):
            after = ""
        size = CompositeKeysetPagination().get_page_size(request)
        prefix = (request.query_params.get("search") or "").strip().lower()[:254]
        if "\x00" in prefix:
            prefix = ""
        items, next_after = addressbook.page(customer, after=after, size=size, prefix=prefix)
        next_url = None
        if next_after:
            next_url = replace_query_param(
                request.build_absolute_uri(), "cursor", encode_cursor("addressbook", [next_after])
            )
        data = s.AddressBookEntrySerializer([item.__dict__ for item in items], many=True).data
        return Response({"next": next_url, "previous": None, "results": data})

    @extend_schema(responses={(200, "text/vcard"): str})
    @action(detail=True, methods=["get"])
    def vcard(self, request: Request, pk: str | None = None) -> StreamingHttpResponse:
        customer = self.get_object()
        response = StreamingHttpResponse(
            addressbook.export(customer), content_type="text/vcard; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="addressbook-{customer.pk}.vcf"'
        return response


# ------------------------------------------------------------------------------ imports


class CsvImportViewSet(MailViewSetMixin, ScopedReadOnlyViewSet):
    """CSV imports: POST with ``dryRun`` true lists every row's errors and writes nothing;
    with ``dryRun`` false a valid file is stored encrypted and applied by one job."""

    queryset = CsvImport.objects.all()
    serializer_class = s.CsvImportSerializer
    filterset_class = None
    keyset_ordering = ("id",)
    http_method_names = ["get", "post", "head", "options"]

    @extend_schema(request=s.CsvImportRequestSerializer, responses={200: dict, 202: dict})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = s.CsvImportRequestSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        domain = data.get("domain")
        if data["dry_run"]:
            report = csv_import.dry_run(data["csv"], actor=request.user, domain=domain)
            return Response(report)
        upload, report = csv_import.request_import(
            actor=request.user, data=data["csv"], domain=domain
        )
        if upload is None:
            return Response(
                {
                    "message": _("The file has errors; nothing was imported."),
                    "errors": {"csv": [_("See the report.")]},
                    "report": report,
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        body = {"import": s.CsvImportSerializer(upload).data, "job": upload.job_id, **report}
        return Response(body, status=status.HTTP_201_CREATED)
