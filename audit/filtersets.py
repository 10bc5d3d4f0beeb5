"""Audit search parameters, validated: bad values are a 400, never a database error."""

from __future__ import annotations

import django_filters
from django.db import models

from ums.api.filters import BoundedIsoDateTimeFilter, IdFilter

from . import search
from .models import AuditRecord


class AuditRecordFilterSet(django_filters.FilterSet):
    since = BoundedIsoDateTimeFilter(field_name="timestamp", lookup_expr="gte")
    until = BoundedIsoDateTimeFilter(field_name="timestamp", lookup_expr="lt")
    actor = django_filters.CharFilter(method="filter_actor", max_length=150)
    action = django_filters.CharFilter(method="filter_action", max_length=64)
    object_type = django_filters.CharFilter(field_name="object_type", max_length=64)
    object_id = django_filters.CharFilter(field_name="object_id", max_length=64)
    customer = IdFilter(method="filter_customer", label="Customer subtree")
    q = django_filters.CharFilter(method="filter_text", max_length=200)

    class Meta:
        model = AuditRecord
        fields = ["channel"]

    def filter_action(self, queryset: models.QuerySet, name: str, value: str) -> models.QuerySet:
        return search.apply_filters(queryset, action=value.strip())

    def filter_actor(self, queryset: models.QuerySet, name: str, value: str) -> models.QuerySet:
        return search.apply_filters(queryset, actor=value.strip())

    def filter_customer(
        self, queryset: models.QuerySet, name: str, value: object
    ) -> models.QuerySet:
        from django.apps import apps

        path = (
            apps.get_model("tenants", "Customer")
            .objects.filter(pk=int(value))
            .values_list("path", flat=True)
            .first()
        )
        return queryset.filter(customer_path__startswith=path) if path else queryset.none()

    def filter_text(self, queryset: models.QuerySet, name: str, value: str) -> models.QuerySet:
        return search.full_text(queryset, value)
