"""Administrators endpoint: contract and every escalation path we know of."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tenants import permissions as perms
from tenants.models import Administrator
from tests.api.contracts import ScopedEndpointContract
from tests.fixtures import PASSWORD, VIEW_ONLY, Cast, make_admin, token_client


class TestAdministratorEndpoint(ScopedEndpointContract):
    basename = "administrator"
    model = Administrator
    audit_prefix = "administrator."

    def make_in_scope(self, cast: Cast) -> Administrator:
        return make_admin(cast.department, "dept.clerk", VIEW_ONLY)

    def make_outside(self, cast: Cast) -> Administrator:
        return cast.sibling_admin

    def create_payload(self, cast: Cast) -> dict:
        return {
            "username": "new.person",
            "fullName": "New Person",
            "email": "new.person@example.org",
            "customer": cast.ministry.pk,
            "permissions": [perms.MAIL_VIEW],
            "password": "Correct-Horse-Battery-9",
        }

    def update_payload(self, cast: Cast, obj: Administrator) -> dict:
        return {"fullName": "Department Clerk"}

    def escape_payload(self, cast: Cast, obj: Administrator) -> dict:
        return {"customer": cast.shop.pk}


pytestmark = pytest.mark.django_db


def create(client, cast: Cast, **overrides):
    payload = {
        "username": "someone",
        "fullName": "Some One",
        "email": "someone@example.org",
        "customer": cast.ministry.pk,
        "permissions": [perms.MAIL_VIEW],
        "password": "Correct-Horse-Battery-9",
        **overrides,
    }
    return client.post(reverse("administrator-list"), payload, format="json")


def test_cannot_grant_a_permission_one_lacks(cast: Cast) -> None:
    viewer = Administrator.objects.get(pk=cast.ministry_viewer.pk)
    viewer.permissions = [*VIEW_ONLY, perms.ADMINISTRATORS_MANAGE]
    viewer.save()
    response = create(token_client(viewer), cast, permissions=[perms.MAIL_VIEW, perms.MAIL_MANAGE])
    assert response.status_code == 400
    assert "permissions" in response.json()["errors"]
    assert not Administrator.objects.filter(username="someone").exists()


def test_cannot_create_above_or_beside(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    assert create(client, cast, customer=cast.provider.pk).status_code == 400
    assert create(client, cast, customer=cast.isp.pk).status_code == 400
    assert not Administrator.objects.filter(username="someone").exists()


def test_cannot_raise_own_permissions(cast: Cast) -> None:
    viewer = Administrator.objects.get(pk=cast.ministry_viewer.pk)
    viewer.permissions = [*VIEW_ONLY, perms.ADMINISTRATORS_MANAGE, perms.TOKENS_MANAGE]
    viewer.save()
    client = token_client(viewer)
    response = client.patch(
        reverse("administrator-detail", args=[viewer.pk]),
        {"permissions": [*VIEW_ONLY, perms.ADMINISTRATORS_MANAGE, perms.MAIL_MANAGE]},
        format="json",
    )
    assert response.status_code == 400
    viewer.refresh_from_db()
    assert perms.MAIL_MANAGE not in viewer.permissions


def test_cannot_touch_administrator_above(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    root = cast.root_admin
    detail = reverse("administrator-detail", args=[root.pk])
    assert client.get(detail).status_code == 404
    assert client.patch(detail, {"fullName": "Pwned"}, format="json").status_code == 404
    assert client.delete(detail).status_code == 404
    password_url = reverse("administrator-set-password", args=[root.pk])
    response = client.post(password_url, {"password": "Another-Strong-Pass-1"}, format="json")
    assert response.status_code == 404
    root.refresh_from_db()
    assert root.full_name != "Pwned"
    assert root.check_password(PASSWORD)


def test_cannot_change_a_more_powerful_peer(cast: Cast) -> None:
    limited = make_admin(cast.government, "limited.peer", [*VIEW_ONLY, perms.ADMINISTRATORS_MANAGE])
    client = token_client(limited)
    url = reverse("administrator-set-password", args=[cast.sub_admin.pk])
    response = client.post(url, {"password": "Another-Strong-Pass-1"}, format="json")
    assert response.status_code == 403
    cast.sub_admin.refresh_from_db()
    assert cast.sub_admin.check_password(PASSWORD)


def test_cannot_revoke_tokens_of_administrator_beside(cast: Cast) -> None:
    from tenants import actions

    token, _secret = actions.create_token(actor=cast.sibling_admin, name="isp")
    response = token_client(cast.sub_admin).delete(reverse("apitoken-detail", args=[token.pk]))
    assert response.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_weak_password_refused(cast: Cast) -> None:
    response = create(token_client(cast.sub_admin), cast, password="password")
    assert response.status_code == 400
    assert "password" in response.json()["errors"]


def test_password_hashed_with_argon2(cast: Cast) -> None:
    assert create(token_client(cast.sub_admin), cast).status_code == 201
    assert Administrator.objects.get(username="someone").password.startswith("argon2")


def test_username_rules(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    assert create(client, cast, username="bad name").status_code == 400
    assert create(client, cast, username="SUB.ADMIN").status_code == 400  # case-insensitive


def test_me_endpoint(cast: Cast) -> None:
    data = token_client(cast.ministry_viewer).get(reverse("administrator-me")).json()
    assert data["username"] == "ministry.viewer"
    assert "password" not in data
