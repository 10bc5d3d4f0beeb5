"""Virtual customers, administrators, API tokens and login throttling records.

Second factors, sessions and SAML / LDAP configuration live in :mod:`tenants.models_identity`.
"""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ums.validators import (
    no_control_characters,
    no_control_characters_multiline,
    not_blank,
    trimmed,
)

from . import permissions as perms

NAME_MAX = 100


class Customer(models.Model):
    """A node of the virtual customer tree (a provider, ministry, department, business...).

    ``path`` is a materialised path of primary keys (``/1/5/12/``): the subtree of a customer
    is every row whose path starts with its own, one index range on PostgreSQL
    (``text_pattern_ops``). Moves rewrite the paths of the subtree in one UPDATE.
    """

    scope_path_field = "path"
    audit_fields = ("name", "parent", "is_active", "notes")

    name = models.CharField(
        _("name"), max_length=NAME_MAX, validators=[no_control_characters, not_blank, trimmed]
    )
    parent = models.ForeignKey(
        "self",
        verbose_name=_("parent"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
    )
    path = models.CharField(max_length=1000, unique=True, editable=False)
    depth = models.PositiveSmallIntegerField(default=0, editable=False)
    is_active = models.BooleanField(_("active"), default=True)
    notes = models.TextField(
        _("notes"), blank=True, max_length=2000, validators=[no_control_characters_multiline]
    )
    # Applies to every administrator of this customer and below it; see tenants.twofactor.
    require_two_factor = models.BooleanField(_("two-factor authentication required"), default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("customer")
        verbose_name_plural = _("customers")
        ordering = ("path",)
        constraints = [
            models.UniqueConstraint(
                Lower("name"), "parent", name="customer_unique_name_among_siblings"
            ),
            models.UniqueConstraint(
                Lower("name"),
                condition=models.Q(parent__isnull=True),
                name="customer_unique_root_name",
            ),
        ]
        indexes = [models.Index(fields=["parent", "name"], name="customer_parent_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def audit_customer(self) -> Customer:
        return self

    @property
    def ancestor_paths(self) -> list[str]:
        """Paths of this customer and every ancestor, root first."""
        ids = [part for part in self.path.split("/") if part]
        return ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]

    @property
    def ancestor_ids(self) -> list[int]:
        return [int(part) for part in self.path.split("/") if part][:-1]

    def is_descendant_of(self, other: Customer) -> bool:
        return self.path.startswith(other.path)

    def login_enabled(self) -> bool:
        """False when this customer or any ancestor is disabled."""
        return not Customer.objects.filter(path__in=self.ancestor_paths, is_active=False).exists()


class AdministratorManager(BaseUserManager):
    use_in_migrations = True

    def get_by_natural_key(self, username: str) -> Administrator:
        return self.get(username__iexact=username)


class Administrator(AbstractBaseUser):
    """One account per person, never shared, working on a home customer and below it."""

    scope_path_field = "customer_path"
    audit_fields = ("username", "full_name", "email", "customer", "permissions", "is_active")

    username = models.CharField(
        _("username"),
        max_length=150,
        unique=True,
        validators=[UnicodeUsernameValidator(), no_control_characters, not_blank, trimmed],
        help_text=_("Letters, digits and @ . + - _ only."),
    )
    full_name = models.CharField(
        _("full name"), max_length=150, validators=[no_control_characters, not_blank, trimmed]
    )
    email = models.EmailField(_("email"), max_length=254)
    customer = models.ForeignKey(
        Customer,
        verbose_name=_("home customer"),
        on_delete=models.PROTECT,
        related_name="administrators",
    )
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    permissions = models.JSONField(_("permissions"), default=list, blank=True)
    is_active = models.BooleanField(_("active"), default=True)
    language = models.CharField(_("language"), max_length=8, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AdministratorManager()

    USERNAME_FIELD = "username"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["email", "full_name"]

    class Meta:
        verbose_name = _("administrator")
        verbose_name_plural = _("administrators")
        ordering = ("username",)
        constraints = [
            models.UniqueConstraint(Lower("username"), name="administrator_unique_username_ci")
        ]

    def __str__(self) -> str:
        return self.username

    @property
    def audit_name(self) -> str:
        return f"{self.full_name} <{self.username}>" if self.full_name else self.username

    @property
    def audit_customer(self) -> Customer:
        return self.customer

    def has_permission(self, code: str) -> bool:
        return self.is_active and code in (self.permissions or [])

    # Django's permission API, so templates and DRF helpers that ask still get an answer.
    def has_perm(self, perm: str, obj: object = None) -> bool:
        return self.has_permission(perm)

    def has_perms(self, perm_list: list[str], obj: object = None) -> bool:
        return all(self.has_permission(p) for p in perm_list)

    @property
    def is_staff(self) -> bool:
        return False

    @property
    def is_superuser(self) -> bool:
        return False

    def permission_set(self) -> set[str]:
        return set(self.permissions or [])

    def permission_labels(self) -> list[str]:
        return [str(perms.LABELS[c]) for c in perms.normalise(self.permissions or [])]


class ApiToken(models.Model):
    """A named API token of one administrator. Only a hash of the secret is stored."""

    scope_path_field = "customer_path"
    audit_fields = ("name", "owner", "read_only", "expires_at", "revoked_at")

    owner = models.ForeignKey(
        Administrator, on_delete=models.CASCADE, related_name="api_tokens", verbose_name=_("owner")
    )
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    name = models.CharField(
        _("name"), max_length=100, validators=[no_control_characters, not_blank, trimmed]
    )
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    read_only = models.BooleanField(_("read-only"), default=False)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def audit_customer(self) -> Customer:
        return self.owner.customer

    def is_usable(self, now: timezone.datetime | None = None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now


class LoginFailure(models.Model):
    """One failed login, kept so throttling survives restarts and cannot be reset by a client."""

    KIND_ACCOUNT = "account"
    KIND_IP = "ip"
    # Failed second-factor attempts, keyed by administrator id (see tenants.throttle).
    KIND_SECOND_FACTOR = "2fa"

    kind = models.CharField(max_length=8)
    key = models.CharField(max_length=200)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["kind", "key", "at"], name="loginfailure_lookup")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.key} at {self.at:%Y-%m-%d %H:%M:%S}"


from .escrow import LimitEscrow  # noqa: E402,F401
from .limits import ResourceLimit  # noqa: E402,F401
from .models_identity import (  # noqa: E402,F401
    LdapDirectory,
    RecoveryCode,
    SamlAssertionUse,
    SamlIdentityProvider,
    SessionRecord,
    TotpDevice,
    WebAuthnCredential,
)
