"""No login path skips a required second factor: password, LDAP directory, SAML (unless the
IdP is trusted to enforce MFA), and a session or token creating an API token."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tenants import actions
from tenants import identity_actions as ia
from tenants import permissions as perms
from tenants.models import Administrator, ApiToken
from tests.fixtures import Cast, make_admin
from tests.identity import saml_idp
from tests.identity import slapd as slapd_harness
from tests.identity.conftest import challenge, code_for, enrol_totp, password_login

pytestmark = pytest.mark.django_db

METHODS = ["password", "ldap", "saml"]


def directory_user(cast: Cast, server: slapd_harness.Slapd) -> Administrator:
    """alice@corp.example, created by a first directory login (before any policy)."""
    slapd_harness.configure_directory(cast, server)
    password_login(Client(), "alice@corp.example", slapd_harness.USERS["alice"][1])
    return Administrator.objects.get(username="alice@corp.example")


def saml_user(cast: Cast) -> Administrator:
    admin = make_admin(cast.department, "clerk", [perms.CUSTOMERS_VIEW, perms.TOKENS_MANAGE])
    Administrator.objects.filter(pk=admin.pk).update(email="clerk@ministry.example")
    return admin


def sign_in(method: str, cast: Cast, server: Any, key: Any) -> tuple[Client, Any]:
    client = Client()
    if method == "password":
        response = password_login(client, "ministry.viewer")
    elif method == "ldap":
        response = password_login(client, "alice@corp.example", slapd_harness.USERS["alice"][1])
    else:
        provider = saml_idp.make_provider(cast, key)
        response = saml_idp.post_acs(client, provider, saml_idp.response_for(provider, key))
    return client, response


def the_user(method: str, cast: Cast, server: Any) -> Administrator:
    if method == "password":
        return cast.ministry_viewer
    if method == "ldap":
        return directory_user(cast, server)
    return saml_user(cast)


def assert_held(client: Client, target: str) -> None:
    for url in ("/customers/", reverse("tenants:settings"), "/audit/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(target), (url, response["Location"])
    assert client.get("/api/v1/customers/").status_code == 401
    made = client.post("/api/v1/tokens/", {"name": "sneaky"}, content_type="application/json")
    assert made.status_code == 401
    assert not ApiToken.objects.filter(name="sneaky").exists()


@pytest.mark.parametrize("method", METHODS)
def test_enrolled_second_factor_is_asked_on_every_path(
    method: str, cast: Cast, directory_server: slapd_harness.Slapd, idp_key: saml_idp.IdpKey
) -> None:
    user = the_user(method, cast, directory_server)
    secret, _codes = enrol_totp(user)
    client, response = sign_in(method, cast, directory_server, idp_key)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("portal:two-factor"))
    assert_held(client, reverse("portal:two-factor"))
    assert challenge(client, code_for(secret)).status_code == 302
    assert client.get(reverse("tenants:settings")).status_code == 200


@pytest.mark.parametrize("method", METHODS)
def test_required_policy_sends_every_path_to_enrolment(
    method: str, cast: Cast, directory_server: slapd_harness.Slapd, idp_key: saml_idp.IdpKey
) -> None:
    the_user(method, cast, directory_server)
    ia.set_two_factor_policy(actor=cast.root_admin, customer=cast.ministry, required=True)
    client, response = sign_in(method, cast, directory_server, idp_key)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("tenants:two-factor"))
    assert_held(client, reverse("tenants:two-factor"))


def test_only_a_trusted_idp_satisfies_the_policy(cast: Cast, idp_key: saml_idp.IdpKey) -> None:
    saml_user(cast)
    ia.set_two_factor_policy(actor=cast.root_admin, customer=cast.ministry, required=True)
    provider = saml_idp.make_provider(cast, idp_key, enforces_mfa=True)
    client = Client()
    response = saml_idp.post_acs(client, provider, saml_idp.response_for(provider, idp_key))
    assert response.status_code == 302
    assert client.get(reverse("tenants:settings")).status_code == 200


def test_token_creation_never_skips_the_factor(cast: Cast) -> None:
    """Every way of making a token: the action, the portal, the API by session and by token."""
    bootstrap, full = actions.create_token(actor=cast.sub_admin, name="bootstrap")
    enrol_totp(cast.sub_admin)
    from django.core.exceptions import PermissionDenied
    from rest_framework.test import APIClient

    with pytest.raises(PermissionDenied):
        actions.create_token(actor=cast.sub_admin, name="direct")
    by_token = APIClient()
    by_token.credentials(HTTP_AUTHORIZATION=f"Bearer {full}")
    assert by_token.post("/api/v1/tokens/", {"name": "api"}, format="json").status_code == 403
    session = Client()
    password_login(session, "sub.admin")  # password only: the factor is still owed
    assert session.post(reverse("tenants:token-create"), {"name": "portal"}).status_code == 302
    assert (
        session.post(
            "/api/v1/tokens/", {"name": "api-session"}, content_type="application/json"
        ).status_code
        == 401
    )
    assert list(ApiToken.objects.filter(owner=cast.sub_admin)) == [bootstrap]
