"""Every state change of second factors, sessions, the two-factor policy and SSO settings.

Like :mod:`tenants.actions`: keyword-only ``actor``, one transaction, the audit record in
that transaction, scope checked before and after. Changes to one's own factors that could
let a stolen session lock the owner out or add an attacker's key (adding a second method,
removing one, new recovery codes, turning 2FA off) need a *fresh* second factor, passed in
as a :class:`~tenants.twofactor.session.FreshProof`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from ums import auditing
from ums.actions import action, recheck_in_scope, require_in_scope, require_permission
from ums.validators import no_control_characters

from . import permissions as perms
from . import session_records
from .actions import _check_grantable, require_manageable
from .models import Administrator, Customer
from .models_identity import (
    LdapDirectory,
    RecoveryCode,
    SamlIdentityProvider,
    SessionRecord,
    TotpDevice,
    WebAuthnCredential,
)
from .twofactor import policy, recovery, totp
from .twofactor.session import FreshProof

# --------------------------------------------------------------------------- helpers


def require_fresh_second_factor(actor: Any, proof: FreshProof | None) -> None:
    """Refuse unless the actor has no second factor or proved one within the fresh window."""
    if actor is None:
        return
    if policy.is_enrolled(actor) and (proof is None or not proof.holds_for(actor)):
        raise PermissionDenied(
            _("Confirm it is you with your second factor first (it must be recent).")
        )


def _own(actor: Any) -> Administrator:
    if actor is None:
        raise PermissionDenied(_("Only an administrator can change their own second factor."))
    return Administrator.objects.select_related("customer").get(pk=actor.pk)


def _ensure_recovery_codes(owner: Administrator) -> list[str]:
    """New codes when the owner has none left unused (first factor enrolled, or all spent)."""
    if RecoveryCode.objects.filter(owner=owner, used_at__isnull=True).exists():
        return []
    codes = recovery.replace_codes(owner)
    auditing.record("twofactor.recovery_codes", obj=owner, after={"count": len(codes)})
    return codes


def _refuse_if_last_factor_and_required(owner: Administrator, removing: str) -> None:
    has_totp = policy.has_totp(owner)
    keys = WebAuthnCredential.objects.filter(owner=owner).count()
    left = (0 if removing == "totp" else int(has_totp)) + keys - (1 if removing == "key" else 0)
    if left <= 0 and policy.two_factor_required(owner):
        raise ValidationError(
            _(
                "Your customer requires two-factor authentication: add another method "
                "before removing this one."
            )
        )


# ------------------------------------------------------------------------------- TOTP


@action
def start_totp_enrolment(*, actor: Any, proof: FreshProof | None = None) -> TotpDevice:
    """A new, unconfirmed secret for the actor's authenticator app (replaces a pending one)."""
    owner = _own(actor)
    if policy.has_totp(owner):
        raise ValidationError(
            _("An authenticator app is already set up. Remove it first to set up another.")
        )
    if policy.has_security_key(owner):
        require_fresh_second_factor(actor, proof)
    TotpDevice.objects.filter(owner=owner, confirmed_at__isnull=True).delete()
    return TotpDevice.objects.create(owner=owner, secret=totp.new_secret())


@action
def confirm_totp(*, actor: Any, code: str) -> list[str]:
    """Activate the pending app with its first code; returns new recovery codes (or [])."""
    owner = _own(actor)
    device = (
        TotpDevice.objects.select_for_update()
        .filter(owner=owner, confirmed_at__isnull=True)
        .first()
    )
    if device is None:
        raise ValidationError({"code": _("Start the set-up again: no pending authenticator.")})
    step = totp.matching_step(device.secret, code)
    if step is None:
        raise ValidationError(
            {"code": _("This code is not right. Check the time on your phone and try again.")}
        )
    device.confirmed_at = timezone.now()
    device.last_used_counter = step
    device.save(update_fields=["confirmed_at", "last_used_counter"])
    auditing.record("twofactor.totp_enrolled", obj=owner)
    return _ensure_recovery_codes(owner)


@action
def remove_totp(*, actor: Any, proof: FreshProof | None) -> None:
    owner = _own(actor)
    require_fresh_second_factor(actor, proof)
    if not policy.has_totp(owner):
        return
    _refuse_if_last_factor_and_required(owner, "totp")
    TotpDevice.objects.filter(owner=owner).delete()
    if not policy.has_security_key(owner):
        RecoveryCode.objects.filter(owner=owner).delete()
    auditing.record("twofactor.totp_removed", obj=owner)


@action
def regenerate_recovery_codes(*, actor: Any, proof: FreshProof | None) -> list[str]:
    owner = _own(actor)
    if not policy.is_enrolled(owner):
        raise ValidationError(_("Set up an authenticator app or a security key first."))
    require_fresh_second_factor(actor, proof)
    codes = recovery.replace_codes(owner)
    auditing.record("twofactor.recovery_codes", obj=owner, after={"count": len(codes)})
    return codes


# ------------------------------------------------------------------------ security keys


@action
def add_security_key(
    *,
    actor: Any,
    name: str,
    credential: dict[str, Any],
    proof: FreshProof | None = None,
) -> WebAuthnCredential:
    """Store a verified credential (see :func:`tenants.twofactor.webauthn.verify_registration`).

    Recovery codes are not made here: the key is registered from a script call that cannot
    show them, so the settings page asks for them right after (see ``two_factor.html``).
    """
    owner = _own(actor)
    require_fresh_second_factor(actor, proof)
    name = (name or "").strip()
    key = WebAuthnCredential(owner=owner, name=name, **credential)
    key.full_clean(
        exclude=["owner", "public_key"], validate_unique=False, validate_constraints=False
    )
    if WebAuthnCredential.objects.filter(owner=owner, name__iexact=name).exists():
        raise ValidationError({"name": _("You already have a security key with this name.")})
    try:
        with transaction.atomic():
            key.save()
    except IntegrityError as exc:
        raise ValidationError({"name": _("This security key is already registered.")}) from exc
    auditing.record("twofactor.key_added", obj=key, after={"name": key.name})
    return key


@action
def remove_security_key(*, actor: Any, key: WebAuthnCredential, proof: FreshProof | None) -> None:
    owner = _own(actor)
    if key.owner_id != owner.pk:
        raise PermissionDenied
    require_fresh_second_factor(actor, proof)
    _refuse_if_last_factor_and_required(owner, "key")
    name, pk = key.name, key.pk
    key.delete()
    if not policy.is_enrolled(owner):
        RecoveryCode.objects.filter(owner=owner).delete()
    auditing.record(
        "twofactor.key_removed",
        object_type="tenants.webauthncredential",
        object_id=pk,
        object_repr=name,
        customer=owner.customer,
        before={"name": name},
    )


# ----------------------------------------------------------------- another's 2FA, policy


@action
def reset_two_factor(*, actor: Any, admin: Administrator) -> None:
    """Remove every second factor of another administrator (a lost phone or key).

    Only within scope and only for someone the actor may manage; their sessions end too, so
    whoever holds the lost device's session cannot go on. They enrol again at next login if
    their customer requires it.
    """
    require_manageable(actor, admin)
    if actor is not None and actor.pk == admin.pk:
        raise ValidationError(_("Use your own security settings to change your second factor."))
    admin = Administrator.objects.select_for_update().get(pk=admin.pk)
    had = {
        "totp": policy.has_totp(admin),
        "security_keys": WebAuthnCredential.objects.filter(owner=admin).count(),
    }
    TotpDevice.objects.filter(owner=admin).delete()
    WebAuthnCredential.objects.filter(owner=admin).delete()
    RecoveryCode.objects.filter(owner=admin).delete()
    ended = SessionRecord.objects.filter(owner=admin, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), ended_reason=session_records.ENDED_REVOKED
    )
    auditing.record("twofactor.reset", obj=admin, before=had, extra={"sessions_ended": ended})
    recheck_in_scope(admin, actor)


@action
def set_two_factor_policy(*, actor: Any, customer: Customer, required: bool) -> Customer:
    """Require (or stop requiring) a second factor for a customer's whole subtree.

    The requirement can only get stricter going down: it cannot be lifted where a customer
    above requires it, and administrators cannot lift the one set on their own home customer
    (that is their superiors' decision).
    """
    require_permission(actor, perms.CUSTOMERS_MANAGE)
    require_in_scope(customer, actor)
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    if customer.require_two_factor == required:
        return customer
    if not required:
        above = policy.required_above(customer)
        if above is not None:
            raise ValidationError(
                {
                    "require_two_factor": _(
                        "A customer above this one requires two-factor authentication; "
                        "it cannot be lifted here."
                    )
                }
            )
        if actor is not None and customer.path == actor.customer_path:
            raise ValidationError(
                {
                    "require_two_factor": _(
                        "You cannot lift the requirement on your own home customer."
                    )
                }
            )
    customer.require_two_factor = required
    customer.save(update_fields=["require_two_factor", "updated_at"])
    auditing.record(
        "customer.two_factor_policy",
        obj=customer,
        before={"require_two_factor": not required},
        after={"require_two_factor": required},
    )
    return customer


# ------------------------------------------------------------------------------ sessions


@action
def revoke_session(*, actor: Any, record: SessionRecord) -> SessionRecord:
    if actor is not None and record.owner_id != actor.pk:
        raise PermissionDenied
    record = (
        SessionRecord.objects.select_for_update()
        .select_related("owner__customer")
        .get(pk=record.pk)
    )
    if record.revoked_at is None:
        record.revoked_at = timezone.now()
        record.ended_reason = session_records.ENDED_REVOKED
        record.save(update_fields=["revoked_at", "ended_reason"])
        auditing.record(
            "auth.session_revoked",
            obj=record.owner,
            extra={"session": record.pk, "ip": record.ip, "user_agent": record.user_agent},
        )
    return record


@action
def revoke_other_sessions(*, actor: Any, keep_hash: str | None) -> int:
    """Sign out everywhere else: every active session of the actor except the current one."""
    owner = _own(actor)
    others = SessionRecord.objects.filter(owner=owner, revoked_at__isnull=True)
    if keep_hash:
        others = others.exclude(key_hash=keep_hash)
    ended = others.update(revoked_at=timezone.now(), ended_reason=session_records.ENDED_REVOKED)
    auditing.record("auth.session_revoked", obj=owner, extra={"others": True, "count": ended})
    return ended


# ------------------------------------------------------------------ SAML and LDAP config

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _domains(values: Any, field: str) -> list[str]:
    if not isinstance(values, list | tuple):
        raise ValidationError({field: _("Give a list of domain names.")})
    cleaned = []
    for value in values:
        domain = str(value).strip().lower().rstrip(".")
        if not _DOMAIN.match(domain):
            raise ValidationError(
                {field: _("“%(value)s” is not a domain name.") % {"value": str(value)[:100]}}
            )
        if domain not in cleaned:
            cleaned.append(domain)
    return cleaned


def _certificate(pem: str, field: str, *, several: bool = False) -> str:
    """A PEM (or bare base64) X.509 certificate, normalised to PEM; anything else refused."""
    text = (pem or "").strip()
    if not text:
        raise ValidationError({field: _("Paste the certificate (PEM).")})
    if "-----BEGIN" not in text:
        body = "".join(text.split())
        text = f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----"
    try:
        certs = x509.load_pem_x509_certificates(text.encode())
    except ValueError as exc:
        raise ValidationError({field: _("This is not a valid PEM certificate.")}) from exc
    if not several and len(certs) != 1:
        raise ValidationError({field: _("Paste exactly one certificate.")})
    from cryptography.hazmat.primitives.serialization import Encoding

    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


def _text(value: Any, field: str, *, required: bool = True, max_length: int = 500) -> str:
    text = str(value or "").strip()
    if required and not text:
        raise ValidationError({field: _("This field is required.")})
    if len(text) > max_length:
        raise ValidationError({field: _("At most %(n)d characters.") % {"n": max_length}})
    try:
        no_control_characters(text)
    except ValidationError as exc:
        raise ValidationError({field: exc.messages}) from exc
    return text


def _dn(value: Any, field: str, *, required: bool = True) -> str:
    text = _text(value, field, required=required)
    if text and ("=" not in text or text.startswith(",") or text.endswith(",")):
        raise ValidationError(
            {field: _("This is not a distinguished name (like dc=example,dc=org).")}
        )
    return text


def _grantable(actor: Any, codes: list[str], field: str) -> list[str]:
    """Only permissions the actor holds may be handed out through SSO settings either."""
    try:
        return _check_grantable(actor, codes)
    except ValidationError as exc:
        raise ValidationError({field: exc.messages}) from exc


def _prepare(instance: Any, customer: Customer | None, actor: Any) -> None:
    if customer is not None:
        require_in_scope(customer, actor)
        instance.customer = customer
        instance.customer_path = customer.path


SAML_FIELDS = {
    "slug",
    "enabled",
    "entity_id",
    "sso_url",
    "x509_cert",
    "email_domains",
    "attribute_email",
    "attribute_full_name",
    "allow_jit",
    "jit_permissions",
    "enforces_mfa",
}


@action
def save_saml_provider(
    *,
    actor: Any,
    provider: SamlIdentityProvider | None = None,
    customer: Customer | None = None,
    **values: Any,
) -> SamlIdentityProvider:
    """Create (``customer=``) or change (``provider=``) a customer's SAML identity provider."""
    require_permission(actor, perms.CUSTOMERS_MANAGE)
    unknown = set(values) - SAML_FIELDS
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})
    if provider is None:
        if customer is None:
            raise ValidationError({"customer": _("Choose the customer.")})
        if SamlIdentityProvider.objects.filter(customer=customer).exists():
            raise ValidationError(
                {"customer": _("This customer already has an identity provider.")}
            )
        provider = SamlIdentityProvider()
        before: dict[str, Any] = {}
    else:
        require_in_scope(provider, actor)
        provider = SamlIdentityProvider.objects.select_for_update().get(pk=provider.pk)
        before = auditing.snapshot(provider)
        if customer is not None and customer.pk != provider.customer_id:
            raise ValidationError({"customer": _("The customer cannot be changed.")})
        customer = None
    _prepare(provider, customer, actor)
    for key, value in values.items():
        setattr(provider, key, value)
    provider.slug = str(provider.slug or "").strip().lower()
    provider.entity_id = _text(provider.entity_id, "entity_id")
    sso = _text(provider.sso_url, "sso_url", max_length=1000)
    try:
        URLValidator(schemes=["https"])(sso)
    except ValidationError as exc:
        raise ValidationError({"sso_url": _("Give the IdP's https:// sign-on URL.")}) from exc
    provider.sso_url = sso
    provider.x509_cert = _certificate(provider.x509_cert, "x509_cert")
    provider.email_domains = _domains(provider.email_domains, "email_domains")
    provider.attribute_email = _text(provider.attribute_email, "attribute_email", required=False)
    provider.attribute_full_name = _text(
        provider.attribute_full_name, "attribute_full_name", required=False
    )
    provider.jit_permissions = _grantable(
        actor, list(provider.jit_permissions or []), "jit_permissions"
    )
    provider.full_clean(exclude=["customer", "customer_path"], validate_unique=False)
    taken = SamlIdentityProvider.objects.exclude(pk=provider.pk)
    if taken.filter(slug=provider.slug).exists():
        raise ValidationError({"slug": _("This sign-in name is taken.")})
    # Compared in Python: the table is small and each provider lists a few domains.
    served = {d for ds in taken.values_list("email_domains", flat=True) for d in ds or []}
    for domain in provider.email_domains:
        if domain in served:
            raise ValidationError(
                {
                    "email_domains": _("Another identity provider already serves %(d)s.")
                    % {"d": domain}
                }
            )
    try:
        with transaction.atomic():
            provider.save()
    except IntegrityError as exc:
        raise ValidationError({"slug": _("This sign-in name is taken.")}) from exc
    old, new = auditing.diff(before, auditing.snapshot(provider))
    if new:
        auditing.record(
            "identity.saml_saved" if before else "identity.saml_created",
            obj=provider,
            before=old,
            after=new,
        )
    recheck_in_scope(provider, actor)
    return provider


@action
def delete_saml_provider(*, actor: Any, provider: SamlIdentityProvider) -> None:
    require_permission(actor, perms.CUSTOMERS_MANAGE)
    require_in_scope(provider, actor)
    snapshot = auditing.snapshot(provider)
    customer, pk, name = provider.customer, provider.pk, provider.slug
    provider.delete()
    auditing.record(
        "identity.saml_deleted",
        object_type="tenants.samlidentityprovider",
        object_id=pk,
        object_repr=name,
        customer=customer,
        before=snapshot,
    )


LDAP_FIELDS = {
    "enabled",
    "server_uri",
    "start_tls",
    "ca_certificate",
    "bind_dn",
    "bind_password",
    "user_search_base",
    "user_search_filter",
    "group_search_base",
    "group_type",
    "group_permissions",
    "attribute_full_name",
    "attribute_email",
    "login_domains",
}


def check_directory_url(uri: str, start_tls: bool) -> str:
    """Only encrypted directories: ``ldaps://``, or ``ldap://`` with StartTLS."""
    uri = _text(uri, "server_uri")
    parts = urlsplit(uri)
    if parts.scheme not in {"ldaps", "ldap"} or not parts.hostname:
        raise ValidationError({"server_uri": _("Use ldaps://host[:port] or ldap://host[:port].")})
    if parts.path not in {"", "/"} or parts.query or parts.fragment or parts.username:
        raise ValidationError({"server_uri": _("Give only the scheme, host and port.")})
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise ValidationError({"server_uri": _("The port is not valid.")}) from exc
    if parts.scheme == "ldap" and not start_tls:
        raise ValidationError(
            {
                "server_uri": _(
                    "Unencrypted LDAP is refused: use ldaps://, or ldap:// with StartTLS."
                )
            }
        )
    if parts.scheme == "ldaps" and start_tls:
        raise ValidationError(
            {"start_tls": _("StartTLS is for ldap:// URLs; ldaps:// is TLS already.")}
        )
    return uri


def check_search_filter(value: str) -> str:
    text = _text(value, "user_search_filter")
    try:
        probe = text % {"user": "probe"}
    except (KeyError, ValueError, TypeError) as exc:
        raise ValidationError(
            {"user_search_filter": _("Use %(user)s where the username goes, and no other % sign.")}
        ) from exc
    depth = 0
    for ch in probe:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            break
    if "%(user)s" not in text or not (text.startswith("(") and text.endswith(")")) or depth != 0:
        raise ValidationError({"user_search_filter": _("Give an LDAP filter like (uid=%(user)s).")})
    return text


def _group_permissions(actor: Any, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list | tuple):
        raise ValidationError({"group_permissions": _("Give a list of group → permissions.")})
    cleaned = []
    for entry in value:
        if not isinstance(entry, dict) or set(entry) - {"group", "permissions"}:
            raise ValidationError(
                {"group_permissions": _("Each entry has a group DN and a list of permissions.")}
            )
        group = _dn(entry.get("group"), "group_permissions")
        codes = _grantable(actor, list(entry.get("permissions") or []), "group_permissions")
        cleaned.append({"group": group, "permissions": codes})
    return cleaned


@action
def save_ldap_directory(
    *,
    actor: Any,
    directory: LdapDirectory | None = None,
    customer: Customer | None = None,
    **values: Any,
) -> LdapDirectory:
    """Create (``customer=``) or change (``directory=``) a customer's LDAP directory.

    ``bind_password`` left out (or ``None``) keeps the stored one; it is never returned.
    """
    require_permission(actor, perms.CUSTOMERS_MANAGE)
    unknown = set(values) - LDAP_FIELDS
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})
    if directory is None:
        if customer is None:
            raise ValidationError({"customer": _("Choose the customer.")})
        if LdapDirectory.objects.filter(customer=customer).exists():
            raise ValidationError({"customer": _("This customer already has a directory.")})
        directory = LdapDirectory()
        before: dict[str, Any] = {}
    else:
        require_in_scope(directory, actor)
        directory = LdapDirectory.objects.select_for_update().get(pk=directory.pk)
        before = auditing.snapshot(directory)
        if customer is not None and customer.pk != directory.customer_id:
            raise ValidationError({"customer": _("The customer cannot be changed.")})
        customer = None
    _prepare(directory, customer, actor)
    password = values.pop("bind_password", None)
    for key, value in values.items():
        setattr(directory, key, value)
    password_changed = password is not None and password != ""
    if password_changed:
        directory.bind_password = str(password)
    directory.server_uri = check_directory_url(directory.server_uri, directory.start_tls)
    if directory.ca_certificate:
        directory.ca_certificate = _certificate(
            directory.ca_certificate, "ca_certificate", several=True
        )
    directory.bind_dn = _dn(directory.bind_dn, "bind_dn", required=False)
    if directory.bind_dn and not directory.bind_password:
        raise ValidationError({"bind_password": _("Give the bind account's password.")})
    directory.user_search_base = _dn(directory.user_search_base, "user_search_base")
    directory.user_search_filter = check_search_filter(directory.user_search_filter)
    directory.group_search_base = _dn(
        directory.group_search_base, "group_search_base", required=False
    )
    directory.group_permissions = _group_permissions(actor, directory.group_permissions)
    if directory.group_permissions and not directory.group_search_base:
        raise ValidationError(
            {"group_search_base": _("Give the group search base to map groups to permissions.")}
        )
    directory.attribute_full_name = _text(
        directory.attribute_full_name, "attribute_full_name", max_length=100
    )
    directory.attribute_email = _text(directory.attribute_email, "attribute_email", max_length=100)
    directory.login_domains = _domains(directory.login_domains, "login_domains")
    if not directory.login_domains:
        raise ValidationError(
            {"login_domains": _("Give at least one domain: users sign in as name@domain.")}
        )
    directory.full_clean(exclude=["customer", "customer_path"], validate_unique=False)
    taken = LdapDirectory.objects.exclude(pk=directory.pk)
    served = {d for ds in taken.values_list("login_domains", flat=True) for d in ds or []}
    for domain in directory.login_domains:
        if domain in served:
            raise ValidationError(
                {"login_domains": _("Another directory already serves %(d)s.") % {"d": domain}}
            )
    directory.save()
    old, new = auditing.diff(before, auditing.snapshot(directory))
    if password_changed:
        # Never the password itself: only that it changed.
        new["bind_password"] = "changed"  # noqa: S105  (a marker, not a password)
    if new:
        auditing.record(
            "identity.ldap_saved" if before else "identity.ldap_created",
            obj=directory,
            before=old,
            after=new,
        )
    recheck_in_scope(directory, actor)
    return directory


@action
def delete_ldap_directory(*, actor: Any, directory: LdapDirectory) -> None:
    require_permission(actor, perms.CUSTOMERS_MANAGE)
    require_in_scope(directory, actor)
    snapshot = auditing.snapshot(directory)
    customer, pk, name = directory.customer, directory.pk, directory.server_uri
    directory.delete()
    auditing.record(
        "identity.ldap_deleted",
        object_type="tenants.ldapdirectory",
        object_id=pk,
        object_repr=name,
        customer=customer,
        before=snapshot,
    )


def apply_directory_permissions(
    admin: Administrator, codes: set[str], directory: LdapDirectory
) -> None:
    """Set an administrator's permissions to what their directory groups grant (at login).

    Called inside the LDAP login's transaction; audited when anything changed.
    """
    wanted = perms.normalise({c for c in codes if c in perms.ALL})
    if list(admin.permissions or []) == wanted:
        return
    before = list(admin.permissions or [])
    Administrator.objects.filter(pk=admin.pk).update(permissions=wanted)
    admin.permissions = wanted
    auditing.record(
        "administrator.update",
        obj=admin,
        actor=None,
        before={"permissions": before},
        after={"permissions": wanted},
        extra={"source": "ldap", "directory": directory.pk},
    )
