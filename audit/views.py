"""Portal audit search and CSV export; an administrator sees their own subtree's records only.

Scoping comes from :class:`ums.portal.views.ScopedListView`; filters are the ones the API
uses (:func:`audit.search.apply_filters`). The customer tree belongs to ``tenants``, which
this app must not import, so customers are looked up through the app registry.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.apps import apps
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views import View

from ums import csvsafe, scoping
from ums.api.filters import storable_datetime
from ums.portal.views import ScopedListView, ScopedQuerysetMixin
from ums.validators import no_control_characters

from . import links, search
from .models import AuditRecord

EXPORT_LIMIT = 100_000
CUSTOMER_CHOICES_LIMIT = 500
DATETIME_LOCAL_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
# Suggestions for the action filter (it matches by prefix, so "customer." finds them all).
KNOWN_ACTIONS = [
    "auth.",
    "auth.login",
    "auth.login_failed",
    "auth.logout",
    "customer.",
    "customer.create",
    "customer.update",
    "customer.move",
    "customer.disable",
    "customer.enable",
    "customer.delete",
    "administrator.",
    "administrator.create",
    "administrator.update",
    "administrator.password",
    "administrator.delete",
    "token.",
    "token.create",
    "token.revoke",
    "token.use",
]


def _customer_model() -> type[models.Model]:
    return apps.get_model("tenants", "Customer")


def audited_object_types() -> list[str]:
    """Object types that appear in audit records: every model declaring ``audit_fields``."""
    return sorted(m._meta.label_lower for m in apps.get_models() if hasattr(m, "audit_fields"))


def _datetime_field(label: Any) -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label,
        required=False,
        input_formats=DATETIME_LOCAL_FORMATS,
        validators=[storable_datetime],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )


def _text_field(label: Any, max_length: int) -> forms.CharField:
    return forms.CharField(
        label=label, required=False, max_length=max_length, validators=[no_control_characters]
    )


class AuditSearchForm(forms.Form):
    since = _datetime_field(_("From"))
    until = _datetime_field(_("Until"))
    actor = _text_field(_("Actor"), 150)
    action = _text_field(_("Action"), 64)
    object_type = _text_field(_("Object type"), 64)
    customer = forms.CharField(label=_("Customer subtree"), required=False, widget=forms.Select)
    q = _text_field(_("Text"), 200)

    def __init__(self, *args: Any, actor: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actor = actor
        customers = scoping.scope_queryset(_customer_model().objects.order_by("path"), actor)
        self.customers = customers
        rows = list(customers.only("id", "name", "path")[:CUSTOMER_CHOICES_LIMIT])
        selected = (self.data.get("customer") or "") if self.is_bound else ""
        if selected.isdigit() and len(selected) < 19 and all(str(c.pk) != selected for c in rows):
            extra = customers.filter(pk=int(selected)).first()
            if extra is not None:
                rows.insert(0, extra)
        root_depth = _depth(scoping.scope_path_of(actor))
        self.fields["customer"].widget.choices = [
            ("", _("All customers in my scope")),
            *[(str(c.pk), "— " * max(_depth(c.path) - root_depth, 0) + c.name) for c in rows],
        ]

    def clean_customer(self) -> Any:
        value = (self.cleaned_data.get("customer") or "").strip()
        if not value:
            return None
        found = None
        if value.isdigit() and len(value) < 19:
            found = self.customers.filter(pk=int(value)).first()
        if found is None:
            raise forms.ValidationError(_("Choose a customer from the list."))
        return found

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            self.add_error("until", _("“Until” must be later than “From”."))
        return data

    def filter(self, queryset: models.QuerySet) -> models.QuerySet:
        """Apply the valid filters; an invalid form matches nothing."""
        if not self.is_valid():
            return queryset.none()
        data = self.cleaned_data
        customer = data.get("customer")
        return search.apply_filters(
            queryset,
            since=data.get("since"),
            until=data.get("until"),
            actor=data.get("actor", "").strip(),
            action=data.get("action", "").strip(),
            object_type=data.get("object_type", "").strip(),
            customer_path=customer.path if customer is not None else None,
            text=data.get("q", "").strip(),
        )


class AuditRow(tuple):
    """A (record, customer name) pair that also carries the links drawn next to it."""

    url: str
    history_url: str

    def __new__(cls, record: AuditRecord, customer: str, *, url: str, history_url: str) -> AuditRow:
        row = super().__new__(cls, (record, customer))
        row.url, row.history_url = url, history_url
        return row

    @property
    def record(self) -> AuditRecord:
        return self[0]

    @property
    def customer(self) -> str:
        return self[1]


def record_rows(records: list[AuditRecord], user: Any) -> list[AuditRow]:
    """What the records table shows per record: customer name, object link, history link.

    A fixed number of queries for the page: one for customer names, one per object type.
    """
    ids = {r.customer_id for r in records if r.customer_id}
    names = (
        dict(
            scoping.scope_queryset(_customer_model().objects.filter(pk__in=ids), user).values_list(
                "pk", "name"
            )
        )
        if ids
        else {}
    )
    urls = links.object_urls(records, user)
    rows = []
    for record in records:
        key = (record.object_type, record.object_id)
        rows.append(
            AuditRow(
                record,
                names.get(record.customer_id, ""),
                url=urls.get(key, ""),
                history_url=reverse("audit:object-history", args=key) if key in urls else "",
            )
        )
    return rows


class ObjectHistoryView(ScopedListView):
    """The audit records of one object: the History tab of every object page.

    An object that exists outside the reader's scope answers 404; a deleted one still shows
    the records the reader may see (and 404 when there are none).
    """

    template_name = "audit/object_history.html"
    permission_required = "audit.view"
    model = AuditRecord
    ordering = "-seq"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        object_type, object_id = kwargs["object_type"], kwargs["object_id"]
        self.obj = links.object_in_scope(object_type, object_id, request.user)
        if self.obj is None and links.object_exists(object_type, object_id):
            raise Http404
        response = super().get(request, *args, **kwargs)
        if self.obj is None and not self.page_has_rows:
            raise Http404
        return response

    def filter_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        return queryset.filter(
            object_type=self.kwargs["object_type"], object_id=self.kwargs["object_id"]
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        records = context["object_list"]
        self.page_has_rows = bool(records)
        page = links.OBJECT_PAGES.get(self.kwargs["object_type"])
        object_url = ""
        user = self.request.user
        if (
            self.obj is not None
            and page is not None
            and (not page.permission or user.has_permission(page.permission))
        ):
            object_url = reverse(page.url_name, args=[self.obj.pk])
        context.update(
            {
                "obj": self.obj,
                "object_name": _object_name(self.obj, records, self.kwargs["object_id"]),
                "object_url": object_url,
                "object_type": self.kwargs["object_type"],
                "rows": record_rows(records, self.request.user),
                "empty_text": _("No audit record names this object yet."),
            }
        )
        return context


def _object_name(obj: Any, records: list[AuditRecord], object_id: str) -> str:
    if obj is not None:
        return str(obj)
    return records[0].object_repr if records and records[0].object_repr else f"#{object_id}"


def _depth(path: str | None) -> int:
    return len([p for p in (path or "").split("/") if p]) - 1


class AuditRecordListView(ScopedListView):
    template_name = "audit/record_list.html"
    permission_required = "audit.view"
    model = AuditRecord
    ordering = "-seq"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.form = AuditSearchForm(request.GET, actor=request.user)
        return super().get(request, *args, **kwargs)

    def filter_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        return self.form.filter(queryset)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        filters = self.request.GET.copy()
        for key in ("after", "before"):
            filters.pop(key, None)
        context.update(
            {
                "form": self.form,
                "rows": record_rows(context["object_list"], self.request.user),
                "empty_text": _("Correct the filters above to search.")
                if self.form.errors
                else _("No audit record matches these filters."),
                "known_actions": KNOWN_ACTIONS,
                "object_types": audited_object_types(),
                "export_query": filters.urlencode(),
                "export_limit": EXPORT_LIMIT,
                "filtered": bool(filters.urlencode()),
            }
        )
        return context


class AuditExportView(ScopedQuerysetMixin, View):
    """The search results as CSV (newest first, at most ``EXPORT_LIMIT`` rows), streamed.

    Cells that a spreadsheet would evaluate as a formula are neutralised by
    :func:`ums.csvsafe.stream_rows`.
    """

    permission_required = "audit.view"
    model = AuditRecord

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = AuditSearchForm(request.GET, actor=request.user)
        if not form.is_valid():
            return TemplateResponse(
                request,
                "audit/record_list.html",
                {
                    "form": form,
                    "rows": [],
                    "empty_text": _("Correct the filters above to search."),
                    "known_actions": KNOWN_ACTIONS,
                    "object_types": audited_object_types(),
                    "filtered": True,
                },
                status=400,
            )
        queryset = form.filter(self.get_queryset()).order_by("-seq")[:EXPORT_LIMIT]
        rows = (search.export_row(r) for r in queryset.iterator(chunk_size=2000))
        response = StreamingHttpResponse(
            csvsafe.stream_rows(search.EXPORT_HEADER, rows), content_type="text/csv; charset=utf-8"
        )
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
        response["Cache-Control"] = "no-store"
        return response
