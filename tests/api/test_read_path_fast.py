"""The read path's short cuts give what the long way gives: timestamptz values read by
``ums.fastdb`` equal Django's, the list's datetimes are DRF's text, and the mailbox list
built on the kept ``values()`` queryset is the serializer-free page the ORM path builds."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from psycopg.pq import Format
from rest_framework import serializers

from mail.api import views
from tenants import actions
from tests.api.test_tokens_api import bearer
from tests.fixtures import Cast
from tests.mail.helpers import make_domain, make_mailbox
from ums.api.filters import FilterBackend

pytestmark = pytest.mark.django_db

PLUS_8 = datetime.timezone(datetime.timedelta(hours=8))
STAMPS = [
    "2026-12-07 19:43:01.1234+00",
    "2026-12-07 19:43:01+00",
    "2000-01-01 00:00:00.000001+00",
    "0099-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
    "2026-06-30 23:59:59.5+02:30",
]


def _read(literal: str, loader: type | None) -> datetime.datetime:
    with connection.cursor() as cursor:
        if loader is not None:
            cursor.cursor.adapters.register_loader("timestamptz", loader)
        cursor.execute("SELECT %s::timestamptz", [literal])
        return cursor.fetchone()[0]


def test_fast_timestamptz_loader_reads_what_django_reads() -> None:
    connection.ensure_connection()
    fast = connection.connection.adapters.get_loader(
        connection.connection.adapters.types["timestamptz"].oid, Format.TEXT
    )
    assert getattr(fast, "_ums_fast", False), "the fast loader is installed on connections"
    django_loader = fast.__mro__[1]
    for literal in STAMPS:
        ours, theirs = _read(literal, None), _read(literal, django_loader)
        assert ours == theirs and ours.tzinfo is theirs.tzinfo, literal
        assert ours.microsecond == theirs.microsecond


def test_out_of_range_timestamps_still_raise_the_same_error() -> None:
    from django.db import DataError

    for literal in ("infinity", "0044-03-15 00:00:00+00 BC"):
        with pytest.raises(DataError):
            _read(literal, None)


def test_list_stamps_are_drf_text() -> None:
    iso = views.iso_stamps()
    field = serializers.DateTimeField(default_timezone=timezone.get_current_timezone())
    values = [
        datetime.datetime(2026, 12, 7, 19, 43, 1, 123400, tzinfo=datetime.UTC),
        datetime.datetime(2026, 12, 7, 19, 43, 1, tzinfo=datetime.UTC),
        datetime.datetime(1, 1, 1, tzinfo=datetime.UTC),
        datetime.datetime(
            2026, 6, 30, 12, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=8))
        ),
    ]
    for value in values:
        assert iso(value) == field.to_representation(value)
    with timezone.override("Asia/Ulaanbaatar"):
        iso = views.iso_stamps()
        field = serializers.DateTimeField(default_timezone=timezone.get_current_timezone())
        for value in values:
            assert iso(value) == field.to_representation(value)


def test_list_on_the_kept_values_queryset_equals_the_filtered_path(
    cast: Cast, monkeypatch: pytest.MonkeyPatch
) -> None:
    for customer, name in ((cast.ministry, "ministry"), (cast.shop, "shop")):
        domain = make_domain(customer, f"{name}.example")
        for n in range(3):
            make_mailbox(domain, f"user{n}")
    url = reverse("mail-mailbox-list") + "?pageSize=2"
    for admin in (cast.root_admin, cast.sub_admin):
        _token, secret = actions.create_token(actor=admin, name="t")
        client = bearer(secret)
        views._VALUES_TEMPLATES.clear()
        pages = []
        while url:
            response = client.get(url)
            assert response.status_code == 200
            pages.append(response.content)
            url = response.json()["next"]
        assert views._VALUES_TEMPLATES, "plain pages use the kept values() queryset"
        # The long way: filtering (with nothing asked) and values() on every request.
        with monkeypatch.context() as patch:
            patch.setattr(FilterBackend, "asked", lambda self, request, queryset, view: True)
            views._VALUES_TEMPLATES.clear()
            url, again = reverse("mail-mailbox-list") + "?pageSize=2", []
            while url:
                response = client.get(url)
                again.append(response.content)
                url = response.json()["next"]
            assert not views._VALUES_TEMPLATES
        assert again == pages and len(pages) >= 2
        url = reverse("mail-mailbox-list") + "?pageSize=2"
