"""The administrator's own settings: profile, language, password and API tokens."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from tenants import actions
from tenants.models import ApiToken
from tests.fixtures import PASSWORD, Cast
from tests.portal.conftest import form_errors

pytestmark = pytest.mark.django_db


def test_profile_update_and_language_cookie(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    response = client.post(
        reverse("tenants:settings"),
        {"full_name": "Government IT", "email": "it@gov.example", "language": "mn"},
    )
    assert response.status_code == 302
    assert response.cookies["django_language"].value == "mn"
    cast.sub_admin.refresh_from_db()
    assert (cast.sub_admin.full_name, cast.sub_admin.language) == ("Government IT", "mn")
    page = client.get(reverse("tenants:settings"))
    assert "Таны профайлыг хадгаллаа." in page.content.decode()  # the message, in Mongolian


def test_profile_refuses_bad_input(cast: Cast, login: Any) -> None:
    response = login(cast.sub_admin).post(
        reverse("tenants:settings"),
        {"full_name": "x" * 151, "email": "nope", "language": "xx"},
    )
    assert set(form_errors(response)) == {"full_name", "email", "language"}
    cast.sub_admin.refresh_from_db()
    assert cast.sub_admin.full_name == "Sub Admin"


def test_change_own_password(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    url = reverse("tenants:password-change")
    new = "Orchard-Signal-Pebble-31"
    wrong = client.post(
        url, {"current_password": "wrong", "password": new, "password_confirm": new}
    )
    assert "current_password" in form_errors(wrong)
    response = client.post(
        url, {"current_password": PASSWORD, "password": new, "password_confirm": new}
    )
    assert response.status_code == 302
    cast.sub_admin.refresh_from_db()
    assert cast.sub_admin.check_password(new)
    # The session survives its own password change.
    assert client.get(reverse("tenants:settings")).status_code == 200


def test_token_secret_is_shown_exactly_once(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    response = client.post(
        reverse("tenants:token-create"), {"name": "backup script", "read_only": "on"}
    )
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    secret = response.context["secret"]
    assert secret.startswith("ums_") and secret in response.content.decode()
    token = ApiToken.objects.get(owner=cast.sub_admin, name="backup script")
    assert token.read_only
    assert secret not in token.secret_hash
    assert AuditRecord.objects.filter(action="token.create", object_id=str(token.pk)).exists()
    # Never again: not on the settings page, not in the session.
    settings_page = client.get(reverse("tenants:settings")).content.decode()
    assert "backup script" in settings_page
    assert secret not in settings_page
    assert secret not in str(dict(client.session))


def test_token_form_errors(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    past = client.post(
        reverse("tenants:token-create"), {"name": "old", "expires_at": "2001-01-01T00:00"}
    )
    assert "expires_at" in form_errors(past)
    bad = client.post(reverse("tenants:token-create"), {"name": "a\x1bb", "expires_at": "soon"})
    assert set(form_errors(bad)) == {"name", "expires_at"}
    assert not ApiToken.objects.filter(owner=cast.sub_admin).exists()


def test_revoke_own_token(cast: Cast, login: Any) -> None:
    token, _secret = actions.create_token(actor=cast.sub_admin, name="ci")
    client = login(cast.sub_admin)
    response = client.post(
        reverse("tenants:token-revoke", args=[token.pk]), {"next": "https://evil.example/"}
    )
    assert response.status_code == 302 and response["Location"] == reverse("tenants:settings")
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_revoke_token_of_a_managed_administrator(cast: Cast, login: Any) -> None:
    from tests.fixtures import token_client

    token_client(cast.ministry_viewer)  # creates a token the viewer owns
    token = ApiToken.objects.get(owner=cast.ministry_viewer)
    client = login(cast.sub_admin)
    page = client.get(reverse("tenants:administrator-detail", args=[cast.ministry_viewer.pk]))
    assert token.name in page.content.decode()
    next_url = reverse("tenants:administrator-detail", args=[cast.ministry_viewer.pk])
    response = client.post(reverse("tenants:token-revoke", args=[token.pk]), {"next": next_url})
    assert response["Location"] == next_url
    token.refresh_from_db()
    assert token.revoked_at is not None
