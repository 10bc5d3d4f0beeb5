"""Identity endpoints: scoping contracts for every route, and the rules they enforce."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditRecord
from tenants import identity_actions as ia
from tenants import permissions as perms
from tenants.models import Administrator, Customer
from tenants.models_identity import LdapDirectory, SamlIdentityProvider, SessionRecord, TotpDevice
from tests.api.contracts import ScopedEndpointContract
from tests.fixtures import VIEW_ONLY, Cast, make_admin, token_client
from tests.identity import saml_idp
from tests.identity.conftest import enrol_totp
from tests.identity.slapd import make_ca

_IDP = saml_idp.make_key()
_, _CA = make_ca("Contract CA")
CA_PEM = _CA.public_bytes(serialization.Encoding.PEM).decode()


def saml_provider(customer: Customer, slug: str, domain: str) -> SamlIdentityProvider:
    return ia.save_saml_provider(
        actor=None,
        customer=customer,
        slug=slug,
        entity_id=f"https://idp.{domain}/saml",
        sso_url=f"https://idp.{domain}/sso",
        x509_cert=_IDP.cert_pem,
        email_domains=[domain],
    )


def directory(customer: Customer, domain: str) -> LdapDirectory:
    return ia.save_ldap_directory(
        actor=None,
        customer=customer,
        server_uri=f"ldaps://ldap.{domain}:636",
        ca_certificate=CA_PEM,
        bind_dn=f"cn=reader,dc={domain.split('.')[0]},dc=example",
        bind_password="Bind-Secret-99",
        user_search_base=f"ou=people,dc={domain.split('.')[0]},dc=example",
        login_domains=[domain],
    )


def session_of(admin: Administrator, tag: str) -> SessionRecord:
    return SessionRecord.objects.create(owner=admin, key_hash=tag * 64, user_agent=tag)


class TestTwoFactorPolicyEndpoint(ScopedEndpointContract):
    basename = "twofactorpolicy"
    model = Customer
    audit_prefix = "customer.two_factor_policy"
    can_delete = False

    def make_in_scope(self, cast: Cast) -> Customer:
        return cast.ministry

    def make_outside(self, cast: Cast) -> Customer:
        return cast.shop

    def update_payload(self, cast: Cast, obj: Customer) -> dict:
        return {"requireTwoFactor": True}


class TestTwoFactorStatusEndpoint(ScopedEndpointContract):
    basename = "twofactor"
    model = Administrator
    audit_prefix = "twofactor."
    can_delete = False

    def make_in_scope(self, cast: Cast) -> Administrator:
        return make_admin(cast.department, "dept.clerk", VIEW_ONLY)

    def make_outside(self, cast: Cast) -> Administrator:
        return cast.sibling_admin


class TestSessionEndpoint(ScopedEndpointContract):
    basename = "session"
    model = SessionRecord
    audit_prefix = "auth.session_revoked"

    def make_in_scope(self, cast: Cast) -> SessionRecord:
        return session_of(cast.sub_admin, "a")

    def make_outside(self, cast: Cast) -> SessionRecord:
        return session_of(cast.sibling_admin, "b")


class TestSamlProviderEndpoint(ScopedEndpointContract):
    basename = "samlprovider"
    model = SamlIdentityProvider
    audit_prefix = "identity.saml"

    def make_in_scope(self, cast: Cast) -> SamlIdentityProvider:
        return saml_provider(cast.ministry, "ministry", "ministry.example")

    def make_outside(self, cast: Cast) -> SamlIdentityProvider:
        return saml_provider(cast.shop, "shop", "shop.example")

    def create_payload(self, cast: Cast) -> dict:
        return {
            "customer": cast.department.pk,
            "slug": "department",
            "entityId": "https://idp.department.example/saml",
            "ssoUrl": "https://idp.department.example/sso",
            "x509Cert": _IDP.cert_pem,
            "emailDomains": ["department.example"],
            "allowJit": True,
            "jitPermissions": [perms.CUSTOMERS_VIEW],
        }

    def update_payload(self, cast: Cast, obj: SamlIdentityProvider) -> dict:
        return {"enforcesMfa": True}

    def escape_payload(self, cast: Cast, obj: SamlIdentityProvider) -> dict:
        return {"customer": cast.shop.pk}


class TestLdapDirectoryEndpoint(ScopedEndpointContract):
    basename = "ldapdirectory"
    model = LdapDirectory
    audit_prefix = "identity.ldap"

    def make_in_scope(self, cast: Cast) -> LdapDirectory:
        return directory(cast.ministry, "ministry.example")

    def make_outside(self, cast: Cast) -> LdapDirectory:
        return directory(cast.shop, "shop.example")

    def create_payload(self, cast: Cast) -> dict:
        return {
            "customer": cast.department.pk,
            "serverUri": "ldap://ldap.department.example:389",
            "startTls": True,
            "caCertificate": CA_PEM,
            "bindDn": "cn=reader,dc=department,dc=example",
            "bindPassword": "Dept-Bind-Secret-1",
            "userSearchBase": "ou=people,dc=department,dc=example",
            "groupSearchBase": "ou=groups,dc=department,dc=example",
            "groupPermissions": [
                {
                    "group": "cn=admins,ou=groups,dc=department,dc=example",
                    "permissions": ["mail.view"],
                }
            ],
            "loginDomains": ["department.example"],
        }

    def update_payload(self, cast: Cast, obj: LdapDirectory) -> dict:
        return {"userSearchFilter": "(sAMAccountName=%(user)s)"}

    def escape_payload(self, cast: Cast, obj: LdapDirectory) -> dict:
        return {"customer": cast.shop.pk}


pytestmark = pytest.mark.django_db


def test_reset_over_the_api_is_scoped_and_audited(cast: Cast) -> None:
    enrol_totp(cast.ministry_viewer)
    url = reverse("twofactor-reset", args=[cast.ministry_viewer.pk])
    assert token_client(cast.sibling_admin).post(url).status_code == 404
    viewer_of_department = make_admin(cast.department, "dept.viewer", VIEW_ONLY)
    # No administrators.manage: refused before anything is looked up.
    assert token_client(viewer_of_department).post(url).status_code == 403
    assert TotpDevice.objects.filter(owner=cast.ministry_viewer).exists()
    response = token_client(cast.sub_admin).post(url)
    assert response.status_code == 204
    assert not TotpDevice.objects.filter(owner=cast.ministry_viewer).exists()
    record = AuditRecord.objects.filter(action="twofactor.reset").latest("seq")
    assert (record.actor_id, record.channel) == (cast.sub_admin.pk, "api")
    status = token_client(cast.sub_admin).get(
        reverse("twofactor-detail", args=[cast.ministry_viewer.pk])
    )
    assert status.json()["enrolled"] is False


def test_status_lists_factors_and_requirement_in_constant_queries(
    cast: Cast, django_assert_max_num_queries: Any
) -> None:
    enrol_totp(cast.ministry_viewer)
    ia.set_two_factor_policy(actor=None, customer=cast.ministry, required=True)
    for i in range(30):
        make_admin(cast.department, f"clerk{i:02}", VIEW_ONLY)
    client = token_client(cast.sub_admin)
    client.get(reverse("twofactor-list"))  # the token's first use is audited once
    with django_assert_max_num_queries(8):
        rows = client.get(reverse("twofactor-list"), {"pageSize": 50}).json()["results"]
    by_name = {row["username"]: row for row in rows}
    assert by_name["ministry.viewer"]["enrolled"] and by_name["ministry.viewer"]["totp"]
    assert by_name["ministry.viewer"]["required"] is True
    assert by_name["clerk00"]["required"] is True
    assert by_name["sub.admin"]["required"] is False


def test_policy_cannot_be_lifted_below_a_requiring_customer(cast: Cast) -> None:
    sub_admin_client = token_client(cast.sub_admin)
    ia.set_two_factor_policy(actor=cast.root_admin, customer=cast.government, required=True)
    client = token_client(cast.root_admin)  # the Provider level is not bound by it
    assert sub_admin_client.get("/api/v1/customers/").status_code == 401  # must enrol first
    refused = client.patch(
        reverse("twofactorpolicy-detail", args=[cast.ministry.pk]),
        {"requireTwoFactor": False},
        format="json",
    )
    # Ministry has no own requirement to lift: a no-op, still effective through Government.
    assert refused.status_code == 200
    assert refused.json()["effective"] is True and refused.json()["requiredAbove"] is True
    enrol_totp(cast.sub_admin)
    lift_own_home = sub_admin_client.patch(
        reverse("twofactorpolicy-detail", args=[cast.government.pk]),
        {"requireTwoFactor": False},
        format="json",
    )
    assert lift_own_home.status_code == 400
    assert "requireTwoFactor" in lift_own_home.json()["errors"]


def test_ldap_secrets_and_unencrypted_urls(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    created = directory(cast.ministry, "ministry.example")
    body = client.get(reverse("ldapdirectory-detail", args=[created.pk])).json()
    assert "bindPassword" not in body and body["hasBindPassword"] is True
    plain = client.patch(
        reverse("ldapdirectory-detail", args=[created.pk]),
        {"serverUri": "ldap://ldap.ministry.example:389", "startTls": False},
        format="json",
    )
    assert plain.status_code == 400
    assert "serverUri" in plain.json()["errors"]
    created.refresh_from_db()
    assert created.server_uri == "ldaps://ldap.ministry.example:636"
    # Keeping the password when it is left out of an update.
    client.patch(
        reverse("ldapdirectory-detail", args=[created.pk]), {"enabled": False}, format="json"
    )
    created.refresh_from_db()
    assert created.bind_password == "Bind-Secret-99" and not created.enabled


def test_permissions_granted_by_sso_are_limited_to_the_actor(cast: Cast) -> None:
    viewer = Administrator.objects.get(pk=cast.ministry_viewer.pk)
    viewer.permissions = [*VIEW_ONLY, perms.CUSTOMERS_MANAGE]
    viewer.save()
    response = token_client(viewer).post(
        reverse("samlprovider-list"),
        {
            "customer": cast.department.pk,
            "slug": "dept",
            "entityId": "https://idp.dept.example/saml",
            "ssoUrl": "https://idp.dept.example/sso",
            "x509Cert": _IDP.cert_pem,
            "allowJit": True,
            "jitPermissions": [perms.ADMINISTRATORS_MANAGE],
        },
        format="json",
    )
    assert response.status_code == 400
    assert "jitPermissions" in response.json()["errors"]


def test_nobody_sees_anyone_elses_sessions(cast: Cast) -> None:
    record = session_of(cast.sub_admin, "c")
    url = reverse("session-detail", args=[record.pk])
    # Not even an administrator above them.
    assert token_client(cast.root_admin).get(url).status_code == 404
    assert token_client(cast.root_admin).delete(url).status_code == 404
    record.refresh_from_db()
    assert record.revoked_at is None
    assert token_client(cast.sub_admin).delete(url).status_code == 204
    record.refresh_from_db()
    assert record.revoked_at is not None and record.revoked_at <= timezone.now()
