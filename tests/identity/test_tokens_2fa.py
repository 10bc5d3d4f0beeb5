"""Creating an API token needs a fresh second factor when one is enrolled: in the portal,
over the API with a session, and over the API with a token (the ``otp`` field)."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import reverse

from audit.models import AuditRecord
from tenants import actions
from tenants.models import ApiToken
from tenants.twofactor.session import FreshProof, proof_now
from tests.fixtures import Cast
from tests.identity.conftest import challenge, code_for, enrol_totp, password_login

pytestmark = pytest.mark.django_db


def logged_in_with_factor(cast: Cast) -> tuple[Client, str]:
    secret, _codes = enrol_totp(cast.sub_admin)
    client = Client()
    password_login(client, "sub.admin")
    challenge(client, code_for(secret))
    return client, secret


def age_verification(client: Client, seconds: int) -> None:
    session = client.session
    session["_ums_2fa"]["at"] -= seconds
    session.save()


def test_action_refuses_without_a_fresh_proof(cast: Cast) -> None:
    enrol_totp(cast.sub_admin)
    with pytest.raises(PermissionDenied):
        actions.create_token(actor=cast.sub_admin, name="no proof")
    stale = FreshProof(
        admin_id=cast.sub_admin.pk, at=proof_now(cast.sub_admin, "totp").at - 3600, method="totp"
    )
    with pytest.raises(PermissionDenied):
        actions.create_token(actor=cast.sub_admin, name="stale", second_factor=stale)
    someone_else = proof_now(cast.ministry_viewer, "totp")
    with pytest.raises(PermissionDenied):
        actions.create_token(actor=cast.sub_admin, name="borrowed", second_factor=someone_else)
    assert not ApiToken.objects.filter(owner=cast.sub_admin).exists()
    token, _secret = actions.create_token(
        actor=cast.sub_admin, name="ok", second_factor=proof_now(cast.sub_admin, "totp")
    )
    assert token.pk


def test_portal_token_creation_steps_up_when_the_check_is_old(cast: Cast) -> None:
    client, secret = logged_in_with_factor(cast)
    age_verification(client, 3600)
    response = client.post(reverse("tenants:token-create"), {"name": "script"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("portal:two-factor"))
    assert "next=/settings/tokens/new/" in response["Location"]
    assert not ApiToken.objects.filter(owner=cast.sub_admin).exists()
    # Confirm, come back, create.
    back = challenge(client, code_for(secret, +1), next_path="/settings/tokens/new/")
    assert back["Location"] == "/settings/tokens/new/"
    created = client.post(reverse("tenants:token-create"), {"name": "script"})
    assert created.status_code == 200
    assert ApiToken.objects.filter(owner=cast.sub_admin, name="script").exists()


def test_api_with_a_session_needs_a_fresh_check(cast: Cast) -> None:
    client, _secret = logged_in_with_factor(cast)
    assert (
        client.post(
            "/api/v1/tokens/", {"name": "fresh"}, content_type="application/json"
        ).status_code
        == 201
    )
    age_verification(client, 3600)
    refused = client.post("/api/v1/tokens/", {"name": "stale"}, content_type="application/json")
    assert refused.status_code == 403
    assert "second factor" in refused.json()["message"]
    assert not ApiToken.objects.filter(name="stale").exists()


def test_api_with_a_token_needs_the_current_code(cast: Cast) -> None:
    from rest_framework.test import APIClient

    # A token made before the owner enrolled; the owner then sets up an app.
    _token, full = actions.create_token(actor=cast.sub_admin, name="bootstrap")
    secret, _codes = enrol_totp(cast.sub_admin)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {full}")
    missing = client.post("/api/v1/tokens/", {"name": "ci"}, format="json")
    assert missing.status_code == 403
    assert "otp" in missing.json()["message"]
    wrong = client.post("/api/v1/tokens/", {"name": "ci", "otp": "000000"}, format="json")
    assert wrong.status_code == 403
    code = code_for(secret)
    ok = client.post("/api/v1/tokens/", {"name": "ci", "otp": code}, format="json")
    assert ok.status_code == 201, ok.content
    # The same code cannot mint a second token.
    replay = client.post("/api/v1/tokens/", {"name": "ci2", "otp": code}, format="json")
    assert replay.status_code == 403
    assert list(ApiToken.objects.filter(owner=cast.sub_admin).values_list("name", flat=True)) == [
        "ci",
        "bootstrap",
    ]
    failed = AuditRecord.objects.filter(
        action="auth.second_factor_failed", actor_id=cast.sub_admin.pk
    )
    assert failed.count() == 2
    assert failed.first().changes["purpose"] == "token"


def test_without_a_second_factor_nothing_extra_is_asked(cast: Cast) -> None:
    client = Client()
    password_login(client, "sub.admin")
    response = client.post(reverse("tenants:token-create"), {"name": "plain"})
    assert response.status_code == 200
    assert ApiToken.objects.filter(owner=cast.sub_admin, name="plain").exists()
