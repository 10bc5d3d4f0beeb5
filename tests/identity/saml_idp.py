"""A throwaway SAML identity provider for the tests: its own RSA key and certificate, and
responses built as an IdP sends them, signed with python3-saml's ``add_sign`` (xmlsec)."""

from __future__ import annotations

import base64
import datetime
import uuid
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.utils import OneLogin_Saml2_Utils

ENTITY_ID = "https://idp.corp.example/saml"
SSO_URL = "https://idp.corp.example/sso"


@dataclass
class IdpKey:
    key_pem: str
    cert_pem: str


def make_key(common_name: str = "Test IdP") -> IdpKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return IdpKey(
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


def _instant(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_response(
    *,
    acs: str,
    audience: str,
    name_id: str,
    email: str | None = None,
    full_name: str = "",
    issuer: str = ENTITY_ID,
    in_response_to: str | None = None,
    valid_from: datetime.datetime | None = None,
    valid_until: datetime.datetime | None = None,
    destination: str | None = None,
) -> str:
    now = datetime.datetime.now(tz=datetime.UTC)
    valid_from = valid_from or now - datetime.timedelta(minutes=1)
    valid_until = valid_until or now + datetime.timedelta(minutes=5)
    irt = f' InResponseTo="{in_response_to}"' if in_response_to else ""
    attributes = ""
    if email is not None:
        attributes += (
            '<saml:Attribute Name="email"><saml:AttributeValue>'
            f"{email}</saml:AttributeValue></saml:Attribute>"
        )
    if full_name:
        attributes += (
            '<saml:Attribute Name="displayName"><saml:AttributeValue>'
            f"{full_name}</saml:AttributeValue></saml:Attribute>"
        )
    statement = (
        f"<saml:AttributeStatement>{attributes}</saml:AttributeStatement>" if attributes else ""
    )
    return (
        '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
        f'ID="_r{uuid.uuid4().hex}" Version="2.0" IssueInstant="{_instant(now)}" '
        f'Destination="{destination if destination is not None else acs}"{irt}>'
        f"<saml:Issuer>{issuer}</saml:Issuer>"
        '<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/>'
        "</samlp:Status>"
        f'<saml:Assertion ID="_a{uuid.uuid4().hex}" Version="2.0" IssueInstant="{_instant(now)}">'
        f"<saml:Issuer>{issuer}</saml:Issuer>"
        "<saml:Subject>"
        '<saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">'
        f"{name_id}</saml:NameID>"
        '<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">'
        f'<saml:SubjectConfirmationData NotOnOrAfter="{_instant(valid_until)}" '
        f'Recipient="{acs}"{irt}/>'
        "</saml:SubjectConfirmation></saml:Subject>"
        f'<saml:Conditions NotBefore="{_instant(valid_from)}" '
        f'NotOnOrAfter="{_instant(valid_until)}">'
        f"<saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience>"
        "</saml:AudienceRestriction></saml:Conditions>"
        f'<saml:AuthnStatement AuthnInstant="{_instant(now)}" SessionIndex="_s{uuid.uuid4().hex}">'
        "<saml:AuthnContext><saml:AuthnContextClassRef>"
        "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
        "</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>"
        f"{statement}"
        "</saml:Assertion></samlp:Response>"
    )


def sign(xml: str, key: IdpKey) -> str:
    """The whole Response signed (RSA-SHA256, SHA-256 digest), as the IdP would."""
    signed = OneLogin_Saml2_Utils.add_sign(
        xml,
        key.key_pem,
        key.cert_pem,
        sign_algorithm=OneLogin_Saml2_Constants.RSA_SHA256,
        digest_algorithm=OneLogin_Saml2_Constants.SHA256,
    )
    return signed.decode() if isinstance(signed, bytes) else signed


def sign_assertion_only(xml: str, key: IdpKey) -> str:
    """Only the Assertion signed (what many IdPs do by default)."""
    root = etree.fromstring(xml.encode())
    assertion = root.find("{urn:oasis:names:tc:SAML:2.0:assertion}Assertion")
    signed = OneLogin_Saml2_Utils.add_sign(
        assertion,
        key.key_pem,
        key.cert_pem,
        sign_algorithm=OneLogin_Saml2_Constants.RSA_SHA256,
        digest_algorithm=OneLogin_Saml2_Constants.SHA256,
    )
    signed_assertion = etree.fromstring(signed)
    root.replace(assertion, signed_assertion)
    return etree.tostring(root).decode()


def encode(xml: str) -> str:
    return base64.b64encode(xml.encode()).decode()


def request_id_from_redirect(location: str) -> str:
    """The ID of the AuthnRequest carried in an HTTP-Redirect binding URL."""
    query = parse_qs(urlsplit(location).query)
    deflated = base64.b64decode(query["SAMLRequest"][0])
    document = etree.fromstring(zlib.decompress(deflated, -15))
    return document.get("ID")


def make_provider(cast: Any, key: IdpKey, **overrides: Any) -> Any:
    """The Ministry's identity provider, configured by the Government administrator."""
    from tenants import identity_actions

    values = {
        "slug": "ministry",
        "entity_id": ENTITY_ID,
        "sso_url": SSO_URL,
        "x509_cert": key.cert_pem,
        "email_domains": ["ministry.example"],
        "attribute_email": "email",
        "attribute_full_name": "displayName",
        **overrides,
    }
    return identity_actions.save_saml_provider(
        actor=cast.sub_admin, customer=cast.ministry, **values
    )


def response_for(provider: Any, key: IdpKey, **kwargs: Any) -> str:
    """A valid, signed response for ``provider`` (override any part with keywords)."""
    from tenants.sso import saml

    kwargs.setdefault("name_id", "clerk@ministry.example")
    kwargs.setdefault("email", kwargs["name_id"])
    xml = build_response(
        acs=kwargs.pop("acs", saml.acs_url(provider)),
        audience=kwargs.pop("audience", saml.sp_entity_id(provider)),
        **kwargs,
    )
    return sign(xml, key)


def post_acs(client: Any, provider: Any, xml: str, relay: str = "") -> Any:
    """The browser's POST of the IdP's answer to our assertion consumer."""
    from django.urls import reverse

    data = {"SAMLResponse": encode(xml)}
    if relay:
        data["RelayState"] = relay
    return client.post(reverse("tenants:saml-acs", args=[provider.slug]), data)
