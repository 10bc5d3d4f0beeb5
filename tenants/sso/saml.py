"""SAML 2.0 sign-in per customer (the portal is the service provider), through python3-saml.

Each :class:`~tenants.models_identity.SamlIdentityProvider` gets its own SP: entity id
``<base>/sso/saml/<slug>/metadata/`` and assertion consumer ``<base>/sso/saml/<slug>/acs/``.
A response is accepted only when python3-saml's strict validation passes (XML schema,
signature by the configured IdP certificate, no deprecated algorithms, issuer, validity
window, subject confirmation, InResponseTo when we sent the request) and, on top of that,
it names our ACS as Destination and our entity id as Audience (python3-saml lets a response
without either through) and its assertion id was never used before.

URLs are built from ``UMS_BASE_URL``, never from the Host header, so a forged Host cannot
make a response meant for another site look addressed to us.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings

from ..models_identity import SamlAssertionUse, SamlIdentityProvider

REPLAY_KEEP_SECONDS = 24 * 3600


class SamlError(Exception):
    """A response that must not sign anyone in; ``reason`` is for the audit record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason[:500]


@dataclass(frozen=True)
class SamlIdentity:
    name_id: str
    email: str
    full_name: str
    assertion_id: str
    expires_at: datetime.datetime


def _base() -> str:
    return settings.BASE_URL.rstrip("/")


def sp_entity_id(provider: SamlIdentityProvider) -> str:
    return f"{_base()}/sso/saml/{provider.slug}/metadata/"


def acs_url(provider: SamlIdentityProvider) -> str:
    return f"{_base()}/sso/saml/{provider.slug}/acs/"


def login_url(provider: SamlIdentityProvider) -> str:
    return f"{_base()}/sso/saml/{provider.slug}/login/"


def saml_settings(provider: SamlIdentityProvider) -> dict[str, Any]:
    return {
        "strict": True,
        "debug": False,
        "sp": {
            "entityId": sp_entity_id(provider),
            "assertionConsumerService": {
                "url": acs_url(provider),
                "binding": OneLogin_Saml2_Constants.BINDING_HTTP_POST,
            },
            "NameIDFormat": OneLogin_Saml2_Constants.NAMEID_UNSPECIFIED,
            "x509cert": "",
            "privateKey": "",
        },
        "idp": {
            "entityId": provider.entity_id,
            "singleSignOnService": {
                "url": provider.sso_url,
                "binding": OneLogin_Saml2_Constants.BINDING_HTTP_REDIRECT,
            },
            "x509cert": provider.x509_cert,
        },
        "security": {
            "authnRequestsSigned": False,
            # Either the whole response or the assertion must be signed (python3-saml always
            # insists on one of them); IdPs differ in which they sign.
            "wantMessagesSigned": False,
            "wantAssertionsSigned": False,
            "wantNameId": True,
            "wantAttributeStatement": False,
            "requestedAuthnContext": False,
            "rejectDeprecatedAlgorithm": True,
            "signatureAlgorithm": OneLogin_Saml2_Constants.RSA_SHA256,
            "digestAlgorithm": OneLogin_Saml2_Constants.SHA256,
        },
    }


def request_data(request: HttpRequest) -> dict[str, Any]:
    """What python3-saml knows of the request, with scheme and host from ``UMS_BASE_URL``."""
    base = urlsplit(_base())
    return {
        "https": "on" if base.scheme == "https" else "off",
        "http_host": base.netloc,
        "script_name": "",
        "path_info": request.path,
        "get_data": request.GET.copy(),
        "post_data": request.POST.copy(),
    }


def metadata_xml(provider: SamlIdentityProvider) -> str:
    sp_settings = OneLogin_Saml2_Settings(saml_settings(provider), sp_validation_only=True)
    metadata = sp_settings.get_sp_metadata()
    errors = sp_settings.validate_metadata(metadata)
    if errors:
        raise SamlError("invalid SP metadata: " + ", ".join(errors))
    return metadata.decode() if isinstance(metadata, bytes) else metadata


def start_login(
    request: HttpRequest, provider: SamlIdentityProvider, relay: str
) -> tuple[str, str]:
    """The IdP URL to send the browser to (an AuthnRequest), and that request's id."""
    auth = OneLogin_Saml2_Auth(request_data(request), saml_settings(provider))
    url = auth.login(return_to=relay)
    return url, auth.get_last_request_id()


def _first(attributes: dict[str, list[str]], name: str) -> str:
    if not name:
        return ""
    values = attributes.get(name) or []
    return str(values[0]).strip() if values else ""


def validate(
    request: HttpRequest, provider: SamlIdentityProvider, encoded: str, request_id: str | None
) -> SamlIdentity:
    """Check a base64 ``SAMLResponse``; return who it signs in, or raise :class:`SamlError`."""
    if not encoded or len(encoded) > 500_000:
        raise SamlError("missing or oversized SAMLResponse")
    try:
        saml_settings_obj = OneLogin_Saml2_Settings(saml_settings(provider))
        response = OneLogin_Saml2_Response(saml_settings_obj, encoded)
        response.is_valid(request_data(request), request_id, raise_exceptions=True)
        destination = response.document.get("Destination")
        audiences = response.get_audiences()
        name_id = response.get_nameid() or ""
        attributes = response.get_attributes()
        assertion_id = response.get_assertion_id()
        not_on_or_after = response.get_assertion_not_on_or_after()
    except SamlError:
        raise
    except Exception as exc:  # python3-saml raises plain exceptions for malformed input
        raise SamlError(str(exc) or exc.__class__.__name__) from exc
    if destination != acs_url(provider):
        raise SamlError("the response does not name this assertion consumer as Destination")
    if sp_entity_id(provider) not in audiences:
        raise SamlError("the assertion is not restricted to this service provider")
    if not assertion_id:
        raise SamlError("the assertion has no ID")
    name_id = name_id.strip()
    email = _first(attributes, provider.attribute_email) or (name_id if "@" in name_id else "")
    expires = (
        datetime.datetime.fromtimestamp(not_on_or_after, tz=datetime.UTC)
        if not_on_or_after
        else timezone.now() + datetime.timedelta(seconds=REPLAY_KEEP_SECONDS)
    )
    return SamlIdentity(
        name_id=name_id,
        email=email.lower(),
        full_name=_first(attributes, provider.attribute_full_name),
        assertion_id=str(assertion_id)[:256],
        expires_at=max(expires, timezone.now() + datetime.timedelta(seconds=REPLAY_KEEP_SECONDS)),
    )


def consume_assertion(provider: SamlIdentityProvider, identity: SamlIdentity) -> None:
    """Remember the assertion id; a second use of the same assertion is a replay."""
    try:
        with transaction.atomic():
            SamlAssertionUse.objects.create(
                provider=provider,
                assertion_id=identity.assertion_id,
                expires_at=identity.expires_at,
            )
    except IntegrityError as exc:
        raise SamlError("replayed assertion") from exc


def purge_used_assertions() -> int:
    deleted, _ = SamlAssertionUse.objects.filter(expires_at__lt=timezone.now()).delete()
    return deleted


def _username_for(identity: SamlIdentity) -> str:
    from django.contrib.auth.validators import UnicodeUsernameValidator
    from django.core.exceptions import ValidationError

    for candidate in (identity.name_id, identity.email):
        if candidate and len(candidate) <= 150:
            try:
                UnicodeUsernameValidator()(candidate)
            except ValidationError:
                continue
            return candidate
    raise SamlError("the NameID cannot be used as a username")


def administrator_for(provider: SamlIdentityProvider, identity: SamlIdentity) -> Any:
    """The administrator the assertion names: an existing one of the provider's customer
    subtree (by username = NameID, else by email), or a new one there when allowed.

    Never anyone outside the subtree: an IdP speaks for its own customer only. With email
    domains configured, it speaks only for addresses in those domains.
    """
    from django.db.models import Q

    from ums import auditing

    from ..auth import AdministratorBackend
    from ..models import Administrator

    if provider.email_domains:
        domain = identity.email.rsplit("@", 1)[-1] if "@" in identity.email else ""
        if domain not in provider.email_domains:
            raise SamlError("the email address is outside the provider's domains")
    subtree = Administrator.objects.select_related("customer").filter(
        customer_path__startswith=provider.customer_path
    )
    admin = subtree.filter(username__iexact=identity.name_id).first() if identity.name_id else None
    if admin is None and identity.email:
        by_email = list(subtree.filter(email__iexact=identity.email)[:2])
        if len(by_email) > 1:
            raise SamlError("several administrators have this email address")
        admin = by_email[0] if by_email else None
    if admin is not None:
        if not AdministratorBackend().user_can_authenticate(admin):
            raise SamlError("the administrator or their customer is disabled")
        return admin
    if not provider.allow_jit:
        raise SamlError("no administrator matches and creating one is not allowed")
    username = _username_for(identity)
    if Administrator.objects.filter(Q(username__iexact=username)).exists():
        raise SamlError("the username belongs to an administrator outside this customer")
    if not provider.customer.login_enabled():
        raise SamlError("the customer is disabled")
    admin = Administrator(
        username=username,
        full_name=(identity.full_name or username)[:150],
        email=identity.email if "@" in identity.email else "",
        customer=provider.customer,
        customer_path=provider.customer_path,
        permissions=list(provider.jit_permissions or []),
    )
    admin.set_unusable_password()
    try:
        admin.full_clean(exclude=["password", "customer_path", "email"], validate_unique=False)
    except Exception as exc:
        raise SamlError(f"the asserted user is not valid: {exc}") from exc
    admin.save()
    auditing.record(
        "administrator.create",
        obj=admin,
        actor=None,
        after=auditing.snapshot(admin),
        extra={"source": "saml", "provider": provider.pk},
    )
    return admin
