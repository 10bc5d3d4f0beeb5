"""Security keys through WebAuthn (py_webauthn): registration and assertion ceremonies.

The relying party is the portal's public address (``UMS_BASE_URL``): its host is the RP id
and its origin the only accepted origin, so a page served from anywhere else cannot use the
keys. Challenges live in the server-side session, are single-use and expire after five
minutes. The authenticator's signature counter must grow (py_webauthn refuses otherwise),
which exposes a cloned key.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from ..models import Administrator
from ..models_identity import WebAuthnCredential

REGISTRATION = "_ums_webauthn_registration"
AUTHENTICATION = "_ums_webauthn_authentication"
CHALLENGE_SECONDS = 300
TIMEOUT_MS = 60_000


class CeremonyError(Exception):
    """The browser's answer did not verify (wrong origin, challenge, signature, counter...)."""


def rp_id() -> str:
    return urlsplit(settings.BASE_URL).hostname or "localhost"


def origin() -> str:
    parts = urlsplit(settings.BASE_URL)
    return f"{parts.scheme}://{parts.netloc}"


def user_handle(admin: Administrator) -> bytes:
    # Stable per account and not the username: authenticators may show or store it.
    return hashlib.sha256(f"ums-administrator:{admin.pk}".encode()).digest()


def _descriptors(admin: Administrator) -> list[PublicKeyCredentialDescriptor]:
    descriptors = []
    for cred in WebAuthnCredential.objects.filter(owner=admin).only("credential_id", "transports"):
        transports = []
        for name in cred.transports or []:
            try:
                transports.append(AuthenticatorTransport(name))
            except ValueError:
                continue
        descriptors.append(
            PublicKeyCredentialDescriptor(
                id=base64url_to_bytes(cred.credential_id), transports=transports or None
            )
        )
    return descriptors


def _remember(request: HttpRequest, key: str, challenge: bytes) -> None:
    request.session[key] = {
        "challenge": bytes_to_base64url(challenge),
        "at": time.time(),
        "admin": request.user.pk,
    }


def _take_challenge(request: HttpRequest, key: str, admin: Administrator) -> bytes:
    """Pop the stored challenge: each one is good for exactly one answer."""
    stored = request.session.pop(key, None)
    if not isinstance(stored, dict) or stored.get("admin") != admin.pk:
        raise CeremonyError("no pending challenge")
    if time.time() - float(stored.get("at", 0)) > CHALLENGE_SECONDS:
        raise CeremonyError("challenge expired")
    return base64url_to_bytes(stored["challenge"])


def registration_options(request: HttpRequest, admin: Administrator) -> str:
    options = generate_registration_options(
        rp_id=rp_id(),
        rp_name=settings.TOTP_ISSUER,
        user_id=user_handle(admin),
        user_name=admin.username,
        user_display_name=admin.full_name or admin.username,
        timeout=TIMEOUT_MS,
        exclude_credentials=_descriptors(admin),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.DISCOURAGED,
        ),
    )
    _remember(request, REGISTRATION, options.challenge)
    return options_to_json(options)


def verify_registration(
    request: HttpRequest, admin: Administrator, credential: dict[str, Any]
) -> dict[str, Any]:
    """Check the browser's registration answer; return what the credential row needs."""
    challenge = _take_challenge(request, REGISTRATION, admin)
    try:
        verified = verify_registration_response(
            credential=json.dumps(credential),
            expected_challenge=challenge,
            expected_rp_id=rp_id(),
            expected_origin=origin(),
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise CeremonyError(str(exc)) from exc
    response = credential.get("response") if isinstance(credential, dict) else None
    transports = response.get("transports", []) if isinstance(response, dict) else []
    return {
        "credential_id": bytes_to_base64url(verified.credential_id),
        "public_key": verified.credential_public_key,
        "sign_count": verified.sign_count,
        "transports": [t for t in transports if isinstance(t, str)][:10],
    }


def authentication_options(request: HttpRequest, admin: Administrator) -> str:
    options = generate_authentication_options(
        rp_id=rp_id(),
        timeout=TIMEOUT_MS,
        allow_credentials=_descriptors(admin),
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    _remember(request, AUTHENTICATION, options.challenge)
    return options_to_json(options)


def verify_authentication(
    request: HttpRequest, admin: Administrator, credential: dict[str, Any]
) -> WebAuthnCredential:
    """Check an assertion against one of the admin's own keys; advance its counter."""
    challenge = _take_challenge(request, AUTHENTICATION, admin)
    raw_id = (
        (credential.get("rawId") or credential.get("id")) if isinstance(credential, dict) else None
    )
    if not isinstance(raw_id, str):
        raise CeremonyError("credential id missing")
    stored = WebAuthnCredential.objects.filter(owner=admin, credential_id=raw_id).first()
    if stored is None:
        raise CeremonyError("unknown credential")
    try:
        verified = verify_authentication_response(
            credential=json.dumps(credential),
            expected_challenge=challenge,
            expected_rp_id=rp_id(),
            expected_origin=origin(),
            credential_public_key=bytes(stored.public_key),
            credential_current_sign_count=stored.sign_count,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise CeremonyError(str(exc)) from exc
    # Conditional on the old counter, so two racing uses of one assertion cannot both pass.
    updated = WebAuthnCredential.objects.filter(pk=stored.pk, sign_count=stored.sign_count).update(
        sign_count=verified.new_sign_count, last_used_at=timezone.now()
    )
    if not updated:
        raise CeremonyError("counter changed concurrently")
    return stored
