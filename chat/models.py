"""A Zulip organisation (realm) serving one customer's subtree, and what it holds.

The administrator chooses where realms sit: one for a whole provider, or one per tenant
further down (a mailbox belongs to the realm of its nearest customer that has one). The
realm's admin bot key is stored encrypted (:class:`ums.crypto.EncryptedTextField`, the
way backup targets keep their secrets) and never leaves through the API or the portal.
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from tenants.models import Customer
from ums.crypto import EncryptedTextField
from ums.validators import no_control_characters, not_blank, trimmed

_TEXT = [no_control_characters, trimmed]
MAX_RETENTION_DAYS = 36500


class ChatRealm(models.Model):
    scope_path_field = "customer_path"
    audit_fields = (
        "customer",
        "name",
        "url",
        "bot_email",
        "default_streams",
        "retention_days",
        "is_enabled",
    )

    customer = models.OneToOneField(
        Customer, on_delete=models.PROTECT, related_name="chat_realm", verbose_name=_("customer")
    )
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    name = models.CharField(_("name"), max_length=100, validators=[*_TEXT, not_blank])
    url = models.CharField(
        _("server URL"),
        max_length=300,
        validators=[URLValidator(schemes=["https", "http"]), *_TEXT],
        help_text=_("The organisation's address, e.g. https://chat.example.org"),
    )
    bot_email = models.EmailField(_("administrator bot e-mail"), max_length=254)
    bot_api_key = EncryptedTextField(_("administrator bot API key"), blank=True)
    default_streams = models.JSONField(
        _("default streams"), default=list, blank=True,
        help_text=_("Streams every user of the organisation is subscribed to."),
    )  # fmt: skip
    retention_days = models.PositiveIntegerField(
        _("message retention (days)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_RETENTION_DAYS)],
        help_text=_("Messages of the default streams are deleted after this; empty: kept."),
    )
    is_enabled = models.BooleanField(_("enabled"), default=True)
    # Level-triggered: a change that affects the realm bumps desired; a finished sync
    # records the desired value it applied.
    desired_generation = models.PositiveBigIntegerField(default=1, editable=False)
    applied_generation = models.PositiveBigIntegerField(default=0, editable=False)
    last_sync_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("chat organisation")
        verbose_name_plural = _("chat organisations")
        ordering = ("customer_path",)

    def __str__(self) -> str:
        return self.name

    @property
    def audit_customer(self) -> Customer:
        return self.customer


class ChatAccount(models.Model):
    """A user of a realm as the last sync left it (the server is the truth; this is what
    the portal shows and what the subtree limits count)."""

    scope_path_field = "customer_path"

    realm = models.ForeignKey(ChatRealm, on_delete=models.CASCADE, related_name="accounts")
    customer_path = models.CharField(max_length=1000, editable=False, db_index=True)
    email = models.EmailField(max_length=254)
    full_name = models.CharField(max_length=200, blank=True)
    zulip_user_id = models.PositiveBigIntegerField()
    is_active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("email",)
        constraints = [
            models.UniqueConstraint(fields=["realm", "email"], name="chat_account_unique_email"),
        ]

    def __str__(self) -> str:
        return self.email
