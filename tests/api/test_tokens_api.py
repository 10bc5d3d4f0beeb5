"""API tokens: shown once, hashed at rest, expiry, revocation, last use."""

from __future__ import annotations

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditRecord
from tenants import actions
from tenants.models import ApiToken
from tests.api.contracts import ScopedEndpointContract
from tests.fixtures import Cast, token_client


class TestApiTokenEndpoint(ScopedEndpointContract):
    basename = "apitoken"
    model = ApiToken
    audit_prefix = "token.create"

    def make_in_scope(self, cast: Cast) -> ApiToken:
        return actions.create_token(actor=cast.sub_admin, name="deploy script")[0]

    def make_outside(self, cast: Cast) -> ApiToken:
        return actions.create_token(actor=cast.sibling_admin, name="isp script")[0]

    def create_payload(self, cast: Cast) -> dict:
        return {"name": "backup job", "readOnly": True}

    can_delete = False  # DELETE revokes; covered below


pytestmark = pytest.mark.django_db


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_token_shown_once_and_stored_hashed(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    response = client.post(reverse("apitoken-list"), {"name": "ci"}, format="json")
    assert response.status_code == 201
    secret = response.json()["token"]
    token = ApiToken.objects.get(pk=response.json()["id"])
    assert secret.split("_", 2)[2] not in token.secret_hash
    assert "token" not in client.get(reverse("apitoken-detail", args=[token.pk])).json()
    assert bearer(secret).get(reverse("customer-list")).status_code == 200


def test_token_acts_exactly_as_owner(cast: Cast) -> None:
    _token, secret = actions.create_token(actor=cast.sub_admin, name="x")
    client = bearer(secret)
    assert client.get(reverse("customer-detail", args=[cast.isp.pk])).status_code == 404
    assert client.get(reverse("customer-detail", args=[cast.ministry.pk])).status_code == 200


def test_expired_and_revoked_tokens_refused(cast: Cast) -> None:
    token, secret = actions.create_token(
        actor=cast.sub_admin,
        name="short",
        expires_at=timezone.now() + datetime.timedelta(seconds=1),
    )
    ApiToken.objects.filter(pk=token.pk).update(
        expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    assert bearer(secret).get(reverse("customer-list")).status_code == 401
    token2, secret2 = actions.create_token(actor=cast.sub_admin, name="revoked")
    response = token_client(cast.sub_admin).delete(reverse("apitoken-detail", args=[token2.pk]))
    assert response.status_code == 204
    assert bearer(secret2).get(reverse("customer-list")).status_code == 401
    assert AuditRecord.objects.filter(action="token.revoke", object_id=str(token2.pk)).exists()


def test_expiry_in_the_past_refused(cast: Cast) -> None:
    response = token_client(cast.sub_admin).post(
        reverse("apitoken-list"),
        {"name": "old", "expiresAt": "2001-01-01T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 400
    assert "expiresAt" in response.json()["errors"]


def test_last_use_recorded(cast: Cast) -> None:
    token, secret = actions.create_token(actor=cast.sub_admin, name="watch")
    bearer(secret).get(reverse("customer-list"), REMOTE_ADDR="192.0.2.10")
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert token.last_used_ip == "192.0.2.10"
    assert AuditRecord.objects.filter(action="token.use", object_id=str(token.pk)).exists()


def test_wrong_secret_with_real_prefix_refused(cast: Cast) -> None:
    token, _secret = actions.create_token(actor=cast.sub_admin, name="guess")
    forged = f"ums_{token.prefix}_{'A' * 43}"
    assert bearer(forged).get(reverse("customer-list")).status_code == 401
