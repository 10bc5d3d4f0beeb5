"""Filters for the mail lists (API and portal): by customer, subtree, domain, address prefix.

Customer filters compare the denormalised ``customer_path`` (``= path`` for one customer,
``LIKE 'path%'`` for a subtree) so they use the same ``(customer_path, email)`` index as
the keyset ordering. Search is an address (or domain) prefix, also an index range.
"""

from __future__ import annotations

import django_filters
from django.db import models

from tenants.models import Customer
from ums.api.filters import IdFilter

from . import choices
from .models import Alias, AutoResponder, DkimKey, Domain, DomainAlias, Mailbox, SieveScript

SEARCH_MAX = 254


def _customer_path(value: object) -> str | None:
    return Customer.objects.filter(pk=int(value)).values_list("path", flat=True).first()


def search_prefix(value: str) -> str:
    """Lowercased search text; a Unicode domain part is turned into its ASCII form."""
    value = value.strip().lower()
    if "@" in value and not value.isascii():
        local, _sep, domain = value.partition("@")
        try:
            import idna

            domain = idna.encode(domain, uts46=True).decode("ascii") if domain else ""
        except (idna.IDNAError, UnicodeError):
            return value
        return f"{local}@{domain}"
    return value


class ScopedMailFilterSet(django_filters.FilterSet):
    customer = IdFilter(method="filter_customer", label="Customer id (exactly)")
    subtree_of = IdFilter(method="filter_subtree", label="Subtree of customer id")

    def filter_customer(
        self, queryset: models.QuerySet, name: str, value: object
    ) -> models.QuerySet:
        path = _customer_path(value)
        return queryset.filter(customer_path=path) if path else queryset.none()

    def filter_subtree(
        self, queryset: models.QuerySet, name: str, value: object
    ) -> models.QuerySet:
        path = _customer_path(value)
        return queryset.filter(customer_path__startswith=path) if path else queryset.none()


class DomainFilterSet(ScopedMailFilterSet):
    search = django_filters.CharFilter(method="filter_search", max_length=SEARCH_MAX)
    is_enabled = django_filters.BooleanFilter()

    class Meta:
        model = Domain
        fields = ["is_enabled"]

    def filter_search(self, queryset: models.QuerySet, name: str, value: str) -> models.QuerySet:
        value = value.strip().lower()
        if not value or "\x00" in value:
            return queryset if not value else queryset.none()
        if value.isascii():
            return queryset.filter(name__startswith=value)
        return queryset.filter(unicode_name__startswith=value)


class AddressFilterSet(ScopedMailFilterSet):
    """Shared by mailboxes and aliases: ``search`` is an address prefix."""

    domain = IdFilter(field_name="domain_id")
    search = django_filters.CharFilter(method="filter_search", max_length=SEARCH_MAX)
    is_enabled = django_filters.BooleanFilter()

    def filter_search(self, queryset: models.QuerySet, name: str, value: str) -> models.QuerySet:
        value = search_prefix(value)
        if not value:
            return queryset
        if "\x00" in value:
            return queryset.none()
        return queryset.filter(email__startswith=value)


class MailboxFilterSet(AddressFilterSet):
    class Meta:
        model = Mailbox
        fields = ["domain", "is_enabled"]


class AliasFilterSet(AddressFilterSet):
    kind = django_filters.ChoiceFilter(choices=choices.ALIAS_KINDS)

    class Meta:
        model = Alias
        fields = ["domain", "kind", "is_enabled"]


class DomainAliasFilterSet(ScopedMailFilterSet):
    domain = IdFilter(field_name="domain_id")

    class Meta:
        model = DomainAlias
        fields = ["domain"]


class DkimKeyFilterSet(ScopedMailFilterSet):
    domain = IdFilter(field_name="domain_id")
    state = django_filters.ChoiceFilter(choices=choices.DKIM_STATES)

    class Meta:
        model = DkimKey
        fields = ["domain", "state"]


class MailboxChildFilterSet(ScopedMailFilterSet):
    mailbox = IdFilter(field_name="mailbox_id")


class SieveScriptFilterSet(MailboxChildFilterSet):
    class Meta:
        model = SieveScript
        fields = ["mailbox", "is_active"]


class AutoResponderFilterSet(MailboxChildFilterSet):
    class Meta:
        model = AutoResponder
        fields = ["mailbox", "is_enabled"]
