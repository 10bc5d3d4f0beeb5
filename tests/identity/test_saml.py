"""SAML sign-in per customer with responses signed by a throwaway IdP key (real python3-saml
and xmlsec): valid ones accepted; wrong key, wrong audience, expired, replayed and edited
ones refused; users mapped only within the customer's subtree."""

from __future__ import annotations

import datetime

import pytest
from django.test import Client
from django.urls import reverse
from lxml import etree

from audit.models import AuditRecord
from tenants import identity_actions as ia
from tenants import permissions as perms
from tenants.models import Administrator
from tenants.models_identity import SamlAssertionUse
from tenants.sso import saml
from tests.fixtures import Cast, make_admin
from tests.identity import saml_idp
from tests.identity.conftest import challenge, code_for, enrol_totp, is_fully_in

pytestmark = pytest.mark.django_db

NOW = datetime.datetime.now


@pytest.fixture(scope="module")
def other_key() -> saml_idp.IdpKey:
    return saml_idp.make_key("Impostor")


make_provider = saml_idp.make_provider
response_for = saml_idp.response_for
post_acs = saml_idp.post_acs


@pytest.fixture
def clerk(cast: Cast) -> Administrator:
    admin = make_admin(cast.department, "clerk", [perms.CUSTOMERS_VIEW])
    Administrator.objects.filter(pk=admin.pk).update(email="clerk@ministry.example")
    admin.refresh_from_db()
    return admin


def test_valid_response_signs_in_the_mapped_administrator(
    cast: Cast, idp_key: saml_idp.IdpKey, clerk: Administrator
) -> None:
    provider = make_provider(cast, idp_key)
    client = Client()
    response = post_acs(client, provider, response_for(provider, idp_key), relay="/customers/")
    assert response.status_code == 302, response.content
    assert response["Location"] == "/customers/"
    assert is_fully_in(client)
    assert client.get("/api/v1/administrators/me/").json()["username"] == "clerk"
    login = AuditRecord.objects.filter(action="auth.saml_login").latest("seq")
    assert login.actor_id == clerk.pk
    assert login.changes["provider"] == provider.pk
    assert (
        AuditRecord.objects.filter(action="auth.login", actor_id=clerk.pk)
        .latest("seq")
        .changes["method"]
        == "saml"
    )


def test_assertion_signed_alone_is_accepted_too(
    cast: Cast, idp_key: saml_idp.IdpKey, clerk: Administrator
) -> None:
    provider = make_provider(cast, idp_key)
    xml = saml_idp.build_response(
        acs=saml.acs_url(provider),
        audience=saml.sp_entity_id(provider),
        name_id="clerk@ministry.example",
        email="clerk@ministry.example",
    )
    response = post_acs(Client(), provider, saml_idp.sign_assertion_only(xml, idp_key))
    assert response.status_code == 302


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong key", "Signature validation failed"),
        ("unsigned", "No Signature found"),
        ("wrong audience", "not a valid audience"),
        ("no audience", "not restricted to this service provider"),
        ("expired", "Could not validate timestamp: expired"),
        ("not yet valid", "Could not validate timestamp: not yet valid"),
        ("wrong destination", "was received at"),
        ("wrong issuer", "Invalid issuer"),
        ("edited name id", "Signature validation failed"),
    ],
)
def test_bad_responses_are_refused(
    cast: Cast,
    idp_key: saml_idp.IdpKey,
    other_key: saml_idp.IdpKey,
    clerk: Administrator,
    case: str,
    reason: str,
) -> None:
    provider = make_provider(cast, idp_key)
    acs, audience = saml.acs_url(provider), saml.sp_entity_id(provider)
    now = datetime.datetime.now(tz=datetime.UTC)
    good = {"acs": acs, "audience": audience, "name_id": "clerk@ministry.example"}
    if case == "wrong key":
        xml = saml_idp.sign(saml_idp.build_response(**good), other_key)
    elif case == "unsigned":
        xml = saml_idp.build_response(**good)
    elif case == "wrong audience":
        xml = saml_idp.sign(
            saml_idp.build_response(**{**good, "audience": "https://other.example/sp"}), idp_key
        )
    elif case == "no audience":
        built = saml_idp.build_response(**good).replace(
            f"<saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience>"
            "</saml:AudienceRestriction>",
            "",
        )
        xml = saml_idp.sign(built, idp_key)
    elif case == "expired":
        xml = saml_idp.sign(
            saml_idp.build_response(
                **good,
                valid_from=now - datetime.timedelta(hours=2),
                valid_until=now - datetime.timedelta(hours=1),
            ),
            idp_key,
        )
    elif case == "not yet valid":
        xml = saml_idp.sign(
            saml_idp.build_response(
                **good,
                valid_from=now + datetime.timedelta(hours=1),
                valid_until=now + datetime.timedelta(hours=2),
            ),
            idp_key,
        )
    elif case == "wrong destination":
        xml = saml_idp.sign(
            saml_idp.build_response(**good, destination="https://elsewhere.example/acs/"), idp_key
        )
    elif case == "wrong issuer":
        xml = saml_idp.sign(
            saml_idp.build_response(**good, issuer="https://evil.example/idp"), idp_key
        )
    else:  # signed for the clerk, then the NameID swapped for someone more powerful
        signed = saml_idp.sign(saml_idp.build_response(**good), idp_key)
        xml = signed.replace("clerk@ministry.example", "sub.admin")
        assert xml != signed
    client = Client()
    response = post_acs(client, provider, xml)
    assert response.status_code == 403
    assert not is_fully_in(client)
    assert "_auth_user_id" not in client.session
    failure = AuditRecord.objects.filter(action="auth.saml_failed").latest("seq")
    assert reason in failure.changes["reason"], failure.changes["reason"]
    assert failure.customer_id == cast.ministry.pk


def test_replayed_response_is_refused(
    cast: Cast, idp_key: saml_idp.IdpKey, clerk: Administrator
) -> None:
    provider = make_provider(cast, idp_key)
    xml = response_for(provider, idp_key)
    assert post_acs(Client(), provider, xml).status_code == 302
    assert SamlAssertionUse.objects.filter(provider=provider).count() == 1
    thief = Client()
    assert post_acs(thief, provider, xml).status_code == 403
    assert not is_fully_in(thief)
    failure = AuditRecord.objects.filter(action="auth.saml_failed").latest("seq")
    assert failure.changes["reason"] == "replayed assertion"


def test_sp_initiated_login_binds_the_answer_to_the_request(
    cast: Cast, idp_key: saml_idp.IdpKey, clerk: Administrator
) -> None:
    provider = make_provider(cast, idp_key)
    client = Client()
    start = client.get(reverse("tenants:saml-login", args=[provider.slug]), {"next": "/audit/"})
    assert start.status_code == 302
    assert start["Location"].startswith(saml_idp.SSO_URL + "?SAMLRequest=")
    request_id = saml_idp.request_id_from_redirect(start["Location"])
    # An answer to some other request is refused...
    stray = response_for(provider, idp_key, in_response_to="_someone-elses-request")
    assert post_acs(client, provider, stray).status_code == 403
    assert (
        "InResponseTo"
        in AuditRecord.objects.filter(action="auth.saml_failed").latest("seq").changes["reason"]
    )
    # ...the answer to ours is accepted, and RelayState brings us where we wanted to go.
    answer = response_for(provider, idp_key, in_response_to=request_id)
    done = post_acs(client, provider, answer, relay="/audit/")
    assert done.status_code == 302 and done["Location"] == "/audit/"


def test_login_by_email_domain_finds_the_provider(cast: Cast, idp_key: saml_idp.IdpKey) -> None:
    provider = make_provider(cast, idp_key)
    response = Client().post(reverse("tenants:sso-start"), {"email": "someone@ministry.example"})
    assert response.status_code == 302
    assert response["Location"] == reverse("tenants:saml-login", args=[provider.slug])
    unknown = Client().post(
        reverse("tenants:sso-start"), {"email": "x@unknown.example"}, follow=True
    )
    assert "No single sign-on is set up" in unknown.content.decode()


def test_metadata_names_our_entity_id_and_acs(cast: Cast, idp_key: saml_idp.IdpKey) -> None:
    provider = make_provider(cast, idp_key)
    response = Client().get(reverse("tenants:saml-metadata", args=[provider.slug]))
    assert response.status_code == 200
    document = etree.fromstring(response.content)
    assert document.get("entityID") == saml.sp_entity_id(provider)
    acs = document.find(".//{urn:oasis:names:tc:SAML:2.0:metadata}AssertionConsumerService")
    assert acs.get("Location") == saml.acs_url(provider)
    assert saml.acs_url(provider).startswith("http://127.0.0.1:8000/sso/saml/ministry/")


def test_unknown_user_is_created_only_when_allowed(cast: Cast, idp_key: saml_idp.IdpKey) -> None:
    provider = make_provider(cast, idp_key)
    xml = response_for(provider, idp_key, name_id="newbie@ministry.example", full_name="New Bie")
    assert post_acs(Client(), provider, xml).status_code == 403
    assert not Administrator.objects.filter(username="newbie@ministry.example").exists()
    ia.save_saml_provider(
        actor=cast.sub_admin,
        provider=provider,
        allow_jit=True,
        jit_permissions=[perms.CUSTOMERS_VIEW, perms.AUDIT_VIEW],
    )
    client = Client()
    xml = response_for(provider, idp_key, name_id="newbie@ministry.example", full_name="New Bie")
    assert post_acs(client, provider, xml).status_code == 302
    created = Administrator.objects.get(username="newbie@ministry.example")
    assert created.customer_id == cast.ministry.pk
    assert created.full_name == "New Bie"
    assert set(created.permissions) == {perms.CUSTOMERS_VIEW, perms.AUDIT_VIEW}
    assert not created.has_usable_password()
    assert (
        AuditRecord.objects.filter(action="administrator.create", object_id=str(created.pk))
        .latest("seq")
        .changes["source"]
        == "saml"
    )


def test_provider_never_speaks_for_anyone_outside_its_subtree(
    cast: Cast, idp_key: saml_idp.IdpKey
) -> None:
    provider = make_provider(cast, idp_key, allow_jit=True, email_domains=[])
    # sub.admin lives above the Ministry; sibling.admin beside it.
    for name in ("sub.admin", "sibling.admin", "root.admin"):
        client = Client()
        xml = response_for(provider, idp_key, name_id=name, email=f"{name}@example.org")
        assert post_acs(client, provider, xml).status_code == 403, name
        assert not is_fully_in(client)
    assert (
        Administrator.objects.filter(username="sub.admin").get().customer_id == cast.government.pk
    )


def test_email_outside_the_provider_domains_is_refused(
    cast: Cast, idp_key: saml_idp.IdpKey, clerk: Administrator
) -> None:
    provider = make_provider(cast, idp_key)
    Administrator.objects.filter(pk=clerk.pk).update(email="clerk@elsewhere.example")
    xml = response_for(provider, idp_key, name_id="clerk", email="clerk@elsewhere.example")
    assert post_acs(Client(), provider, xml).status_code == 403


def test_saml_satisfies_the_policy_only_when_the_idp_enforces_mfa(
    cast: Cast, idp_key: saml_idp.IdpKey, clerk: Administrator
) -> None:
    ia.set_two_factor_policy(actor=cast.root_admin, customer=cast.government, required=True)
    secret, _codes = enrol_totp(clerk)
    provider = make_provider(cast, idp_key)
    client = Client()
    response = post_acs(client, provider, response_for(provider, idp_key), relay="/customers/")
    assert response["Location"].startswith(reverse("portal:two-factor"))
    assert not is_fully_in(client)
    assert challenge(client, code_for(secret)).status_code == 302
    assert is_fully_in(client)

    ia.save_saml_provider(actor=cast.sub_admin, provider=provider, enforces_mfa=True)
    trusted = Client()
    response = post_acs(trusted, provider, response_for(provider, idp_key), relay="/customers/")
    assert response["Location"] == "/customers/"
    assert is_fully_in(trusted)


def test_configuration_is_validated(cast: Cast, idp_key: saml_idp.IdpKey) -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as not_https:
        make_provider(cast, idp_key, sso_url="http://idp.corp.example/sso")
    assert "sso_url" in not_https.value.message_dict
    with pytest.raises(ValidationError) as bad_cert:
        make_provider(cast, idp_key, x509_cert="not a certificate")
    assert "x509_cert" in bad_cert.value.message_dict
    make_provider(cast, idp_key)
    with pytest.raises(ValidationError) as taken:
        ia.save_saml_provider(
            actor=cast.sub_admin,
            customer=cast.department,
            slug="dept",
            entity_id="x",
            sso_url=saml_idp.SSO_URL,
            x509_cert=idp_key.cert_pem,
            email_domains=["ministry.example"],
        )
    assert "email_domains" in taken.value.message_dict
