"""Identity records: second factors, active sessions, and SAML / LDAP sign-in per customer.

Secrets never rest in clear: TOTP seeds and directory bind passwords are Fernet-encrypted
(:class:`ums.crypto.EncryptedTextField`), recovery codes and session ids are stored as
hashes only. Imported at the bottom of :mod:`tenants.models` so Django sees the models.
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ums.crypto import EncryptedTextField
from ums.validators import no_control_characters, not_blank, trimmed

from .models import Administrator, Customer

# ------------------------------------------------------------------------ second factors


class TotpDevice(models.Model):
    """An authenticator app (RFC 6238). Active once confirmed with a first code."""

    owner = models.OneToOneField(
        Administrator, on_delete=models.CASCADE, related_name="totp_device"
    )
    secret = EncryptedTextField()
    confirmed_at = models.DateTimeField(null=True, blank=True)
    # The highest time step ever accepted: a code is never accepted twice, nor an older one.
    last_used_counter = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("authenticator app")
        verbose_name_plural = _("authenticator apps")

    def __str__(self) -> str:
        return f"TOTP of {self.owner_id}"


class RecoveryCode(models.Model):
    """A one-time recovery code; only its hash is kept."""

    owner = models.ForeignKey(
        Administrator, on_delete=models.CASCADE, related_name="recovery_codes"
    )
    code_hash = models.CharField(max_length=64)
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("recovery code")
        verbose_name_plural = _("recovery codes")
        indexes = [models.Index(fields=["owner", "code_hash"], name="recoverycode_lookup")]

    def __str__(self) -> str:
        return f"recovery code of {self.owner_id}"


class WebAuthnCredential(models.Model):
    """A security key (YubiKey or any FIDO2 / WebAuthn authenticator) with a name."""

    audit_fields = ("name", "owner")

    owner = models.ForeignKey(Administrator, on_delete=models.CASCADE, related_name="security_keys")
    name = models.CharField(
        _("name"), max_length=100, validators=[no_control_characters, not_blank, trimmed]
    )
    # base64url of the raw credential id (at most 1023 bytes by the WebAuthn spec).
    credential_id = models.CharField(max_length=1400, unique=True)
    public_key = models.BinaryField()
    sign_count = models.BigIntegerField(default=0)
    transports = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("security key")
        verbose_name_plural = _("security keys")
        ordering = ("created_at", "id")
        constraints = [
            models.UniqueConstraint(
                "owner", Lower("name"), name="securitykey_unique_name_per_owner"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def audit_customer(self) -> Customer:
        return self.owner.customer


# ------------------------------------------------------------------------------ sessions


class SessionRecord(models.Model):
    """One signed-in browser session, listed to its owner and revocable by them.

    ``key_hash`` is the SHA-256 of a random id kept inside the server-side session data
    (not the cookie's session key): the id survives the key rotations at login and after
    the second factor, and this table holds nothing that could be replayed as a cookie.
    The middleware refuses a session whose record is revoked, idle or too old.
    """

    owner = models.ForeignKey(
        Administrator, on_delete=models.CASCADE, related_name="session_records"
    )
    key_hash = models.CharField(max_length=64, unique=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    method = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    ended_reason = models.CharField(max_length=16, blank=True)

    class Meta:
        verbose_name = _("session")
        verbose_name_plural = _("sessions")
        ordering = ("-last_seen_at", "-id")
        indexes = [models.Index(fields=["owner", "revoked_at"], name="sessionrecord_owner")]

    def __str__(self) -> str:
        return f"session {self.pk} of {self.owner_id}"

    @property
    def audit_customer(self) -> Customer:
        return self.owner.customer

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


# ------------------------------------------------------------------------- SAML and LDAP

SLUG_HELP = _("Lower-case letters, digits and hyphens; part of the sign-in address.")


class SamlIdentityProvider(models.Model):
    """A customer's SAML 2.0 identity provider: its administrators sign in through it."""

    scope_path_field = "customer_path"
    audit_fields = (
        "customer",
        "slug",
        "enabled",
        "entity_id",
        "sso_url",
        "email_domains",
        "attribute_email",
        "attribute_full_name",
        "allow_jit",
        "jit_permissions",
        "enforces_mfa",
    )

    customer = models.OneToOneField(
        Customer,
        verbose_name=_("customer"),
        on_delete=models.CASCADE,
        related_name="saml_provider",
    )
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    slug = models.SlugField(_("sign-in name"), max_length=60, unique=True, help_text=SLUG_HELP)
    enabled = models.BooleanField(_("enabled"), default=True)
    entity_id = models.CharField(_("IdP entity id"), max_length=500)
    sso_url = models.URLField(_("IdP single sign-on URL"), max_length=1000)
    x509_cert = models.TextField(_("IdP signing certificate"), max_length=20000)
    email_domains = models.JSONField(_("email domains"), default=list, blank=True)
    attribute_email = models.CharField(_("email attribute"), max_length=200, blank=True)
    attribute_full_name = models.CharField(_("full name attribute"), max_length=200, blank=True)
    allow_jit = models.BooleanField(_("create unknown users"), default=False)
    jit_permissions = models.JSONField(_("permissions of created users"), default=list, blank=True)
    enforces_mfa = models.BooleanField(_("IdP enforces multi-factor"), default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("SAML identity provider")
        verbose_name_plural = _("SAML identity providers")
        ordering = ("slug",)

    def __str__(self) -> str:
        return self.slug

    @property
    def audit_customer(self) -> Customer:
        return self.customer


class SamlAssertionUse(models.Model):
    """An assertion id already consumed: the same response is never accepted twice."""

    provider = models.ForeignKey(
        SamlIdentityProvider, on_delete=models.CASCADE, related_name="used_assertions"
    )
    assertion_id = models.CharField(max_length=256)
    # Kept until the assertion would have expired anyway; then it cannot be replayed.
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "assertion_id"], name="saml_assertion_used_once"
            )
        ]
        indexes = [models.Index(fields=["expires_at"], name="samlassertion_expiry")]

    def __str__(self) -> str:
        return self.assertion_id


class LdapDirectory(models.Model):
    """A customer's LDAP directory (LDAPS or StartTLS only) for its administrators."""

    GROUP_OF_NAMES = "groupOfNames"
    POSIX_GROUP = "posixGroup"
    GROUP_TYPES = [(GROUP_OF_NAMES, "groupOfNames"), (POSIX_GROUP, "posixGroup")]

    scope_path_field = "customer_path"
    audit_fields = (
        "customer",
        "enabled",
        "server_uri",
        "start_tls",
        "bind_dn",
        "user_search_base",
        "user_search_filter",
        "group_search_base",
        "group_type",
        "group_permissions",
        "attribute_full_name",
        "attribute_email",
        "login_domains",
    )

    customer = models.OneToOneField(
        Customer,
        verbose_name=_("customer"),
        on_delete=models.CASCADE,
        related_name="ldap_directory",
    )
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    server_uri = models.CharField(_("directory URL"), max_length=500)
    start_tls = models.BooleanField(_("use StartTLS"), default=False)
    ca_certificate = models.TextField(_("CA certificate"), blank=True, max_length=50000)
    bind_dn = models.CharField(_("bind DN"), max_length=500, blank=True)
    bind_password = EncryptedTextField(_("bind password"), blank=True)
    user_search_base = models.CharField(_("user search base"), max_length=500)
    user_search_filter = models.CharField(
        _("user search filter"), max_length=500, default="(uid=%(user)s)"
    )
    group_search_base = models.CharField(_("group search base"), max_length=500, blank=True)
    group_type = models.CharField(
        _("group type"), max_length=20, choices=GROUP_TYPES, default=GROUP_OF_NAMES
    )
    group_permissions = models.JSONField(_("group permissions"), default=list, blank=True)
    attribute_full_name = models.CharField(_("full name attribute"), max_length=100, default="cn")
    attribute_email = models.CharField(_("email attribute"), max_length=100, default="mail")
    login_domains = models.JSONField(_("login domains"), default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("LDAP directory")
        verbose_name_plural = _("LDAP directories")
        ordering = ("customer_path",)

    def __str__(self) -> str:
        return self.server_uri

    @property
    def audit_customer(self) -> Customer:
        return self.customer
