"""Filters for customer and administrator lists (API and portal)."""

from __future__ import annotations

import django_filters
from django.db import models

from ums.api.filters import IdFilter

from .models import Administrator, ApiToken, Customer


class CustomerFilterSet(django_filters.FilterSet):
    parent = IdFilter(field_name="parent_id")
    subtree_of = IdFilter(method="filter_subtree", label="Subtree of customer id")
    search = django_filters.CharFilter(method="filter_search", max_length=100)
    is_active = django_filters.BooleanFilter()

    class Meta:
        model = Customer
        fields = ["parent", "is_active"]

    def filter_subtree(
        self, queryset: models.QuerySet, name: str, value: object
    ) -> models.QuerySet:
        root = Customer.objects.filter(pk=int(value)).values_list("path", flat=True).first()
        if root is None:
            return queryset.none()
        return queryset.filter(path__startswith=root)

    def filter_search(self, queryset: models.QuerySet, name: str, value: str) -> models.QuerySet:
        return queryset.filter(name__icontains=value.strip()) if value.strip() else queryset


class AdministratorFilterSet(django_filters.FilterSet):
    customer = IdFilter(field_name="customer_id")
    subtree_of = IdFilter(method="filter_subtree")
    search = django_filters.CharFilter(method="filter_search", max_length=150)
    is_active = django_filters.BooleanFilter()

    class Meta:
        model = Administrator
        fields = ["customer", "is_active"]

    def filter_subtree(
        self, queryset: models.QuerySet, name: str, value: object
    ) -> models.QuerySet:
        root = Customer.objects.filter(pk=int(value)).values_list("path", flat=True).first()
        if root is None:
            return queryset.none()
        return queryset.filter(customer_path__startswith=root)

    def filter_search(self, queryset: models.QuerySet, name: str, value: str) -> models.QuerySet:
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(
            models.Q(username__icontains=value)
            | models.Q(full_name__icontains=value)
            | models.Q(email__icontains=value)
        )


class ApiTokenFilterSet(django_filters.FilterSet):
    owner = IdFilter(field_name="owner_id")

    class Meta:
        model = ApiToken
        fields = ["owner", "read_only"]
