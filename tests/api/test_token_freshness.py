"""Token authentication reads everything fresh: a revoked token, a removed permission, a
disabled customer above the owner or a new second-factor requirement takes effect on the
very next request of an already working client."""

from __future__ import annotations

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from tenants import actions
from tenants import permissions as perms
from tenants.models import Administrator, ApiToken, Customer
from tests.api.test_tokens_api import bearer
from tests.fixtures import Cast

pytestmark = pytest.mark.django_db


def working_client(cast: Cast):
    token, secret = actions.create_token(actor=cast.sub_admin, name="fresh")
    client = bearer(secret)
    assert client.get(reverse("customer-list")).status_code == 200
    return token, client


def test_revoked_token_refused_on_the_next_request(cast: Cast) -> None:
    token, client = working_client(cast)
    actions.revoke_token(actor=cast.sub_admin, token=token)
    assert client.get(reverse("customer-list")).status_code == 401


def test_removed_permission_refused_on_the_next_request(cast: Cast) -> None:
    _token, client = working_client(cast)
    remaining = [p for p in cast.sub_admin.permissions if p != perms.CUSTOMERS_VIEW]
    Administrator.objects.filter(pk=cast.sub_admin.pk).update(permissions=remaining)
    assert client.get(reverse("customer-list")).status_code == 403


def test_disabled_ancestor_refused_on_the_next_request(cast: Cast) -> None:
    _token, client = working_client(cast)
    # The sub admin's customer is below the provider; disable the one above it.
    parent = Customer.objects.get(pk=cast.sub_admin.customer_id).parent
    Customer.objects.filter(pk=parent.pk).update(is_active=False)
    assert client.get(reverse("customer-list")).status_code == 401
    Customer.objects.filter(pk=parent.pk).update(is_active=True)
    assert client.get(reverse("customer-list")).status_code == 200


def test_new_second_factor_requirement_refused_on_the_next_request(cast: Cast) -> None:
    _token, client = working_client(cast)
    Customer.objects.filter(pk=cast.sub_admin.customer_id).update(require_two_factor=True)
    assert client.get(reverse("customer-list")).status_code == 401


def test_an_unrelated_disabled_customer_does_not_matter(cast: Cast) -> None:
    _token, client = working_client(cast)
    Customer.objects.filter(pk=cast.isp.pk).update(is_active=False)
    assert client.get(reverse("customer-list")).status_code == 200


def test_expired_token_refused_on_the_next_request(cast: Cast) -> None:
    token, client = working_client(cast)
    ApiToken.objects.filter(pk=token.pk).update(
        expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    assert client.get(reverse("customer-list")).status_code == 401


def test_deactivated_owner_refused_on_the_next_request(cast: Cast) -> None:
    _token, client = working_client(cast)
    Administrator.objects.filter(pk=cast.sub_admin.pk).update(is_active=False)
    assert client.get(reverse("customer-list")).status_code == 401


def test_token_made_read_only_refuses_writes_on_the_next_request(cast: Cast) -> None:
    token, client = working_client(cast)
    url = reverse("customer-list")
    body = {"name": "Fresh one", "parent": cast.sub_admin.customer_id}
    ApiToken.objects.filter(pk=token.pk).update(read_only=True)
    assert client.post(url, body, content_type="application/json").status_code == 403
    ApiToken.objects.filter(pk=token.pk).update(read_only=False)
    assert client.post(url, body, content_type="application/json").status_code == 201


def test_the_owner_acts_with_the_permissions_of_the_moment(cast: Cast) -> None:
    """The owner object a request acts as is built from this request's rows: a permission
    granted between two requests works on the second."""
    _token, client = working_client(cast)
    url = reverse("customer-list")
    body = {"name": "Granted later", "parent": cast.sub_admin.customer_id}
    without = [p for p in cast.sub_admin.permissions if p != perms.CUSTOMERS_MANAGE]
    Administrator.objects.filter(pk=cast.sub_admin.pk).update(permissions=without)
    assert client.post(url, body, content_type="application/json").status_code == 403
    Administrator.objects.filter(pk=cast.sub_admin.pk).update(
        permissions=[*without, perms.CUSTOMERS_MANAGE]
    )
    assert client.post(url, body, content_type="application/json").status_code == 201
