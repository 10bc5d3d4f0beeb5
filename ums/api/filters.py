"""Filter helpers whose values cannot overflow a database column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import django_filters
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from django_filters.rest_framework import DjangoFilterBackend

from ums.api.fields import MAX_ID


class IdFilter(django_filters.NumberFilter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_ID)
        kwargs.setdefault("decimal_places", 0)
        super().__init__(*args, **kwargs)


# PostgreSQL refuses UTC offsets beyond ±15:59 and Python's own range ends at year 9999;
# real time zones stay within ±14:00 (Kiribati, Baker Island).
MAX_UTC_OFFSET = timedelta(hours=14)


def storable_datetime(value: datetime | None) -> None:
    """Refuse a datetime the database cannot hold or compare: a field error, not a 500."""
    if value is None:
        return
    offset = value.utcoffset()
    if offset is not None and abs(offset) > MAX_UTC_OFFSET:
        raise ValidationError(
            _("A time zone offset must be between -14:00 and +14:00."), code="offset"
        )
    try:
        value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValidationError(
            _("Enter a date between the years 1 and 9999."), code="range"
        ) from exc


class BoundedIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 datetime filter that refuses offsets and dates the database cannot hold."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra.setdefault("validators", []).append(storable_datetime)


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, less its per-request cost when no filter is asked for.

    Building a filterset builds a form class and deep-copies every filter (about a third
    of a first page's CPU). With no query parameter naming one of its filters every
    filter sees an empty value, which django-filter treats as "no filter": the queryset
    comes back unchanged, so it is returned as is. A parameter that names a filter (or a
    range filter's ``<name>_<suffix>``) takes the full path, validation included.
    """

    def asked(self, request: Any, queryset: Any, view: Any) -> bool:
        """Whether a query parameter names a filter (else filtering changes nothing)."""
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is None:
            return False
        names = filterset_class.base_filters
        return any(
            key in names or any(key.startswith(f"{name}_") for name in names)
            for key in request.query_params
        )

    def filter_queryset(self, request: Any, queryset: Any, view: Any) -> Any:
        if not self.asked(request, queryset, view):
            return queryset
        return super().filter_queryset(request, queryset, view)
