"""Mail domains, mailboxes, aliases and groups, auto-responders, Sieve scripts, policies, DKIM.

Every model belongs to a virtual customer and keeps the customer's materialised path in
``customer_path`` (scoping, and rewritten by ``tenants.actions.move_customer``). Fields are
modelled so the Postfix and Courier maps can be rendered from them exactly: addresses are
stored validated and lowercased in their ASCII (IDNA) form beside the Unicode form shown to
people, passwords as SHA512-CRYPT, and every per-port access switch explicitly.

On PostgreSQL, migration 0002 gives ``customer_path``, ``email`` and ``name`` the "C"
collation so one b-tree serves both the subtree prefix (``LIKE '/1/5/%'``) and the ordering
of keyset pages. An AlterField on those columns must re-apply it.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from tenants.models import Customer
from ums.crypto import EncryptedTextField
from ums.validators import no_control_characters, trimmed

from . import choices
from .passwords import PENDING_HASH

PATH_MAX = 1000


class ScopedMailModel(models.Model):
    """Belongs to a customer; ``customer_path`` is a copy of the customer's path."""

    scope_path_field = "customer_path"

    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="+", verbose_name=_("customer")
    )
    customer_path = models.CharField(max_length=PATH_MAX, editable=False)

    class Meta:
        abstract = True

    @property
    def audit_customer(self) -> Customer:
        return self.customer


class PolicyFields(models.Model):
    """Protocol access and filtering policy of one level; empty values inherit from above."""

    protocol_access = models.JSONField(_("protocol access"), default=dict, blank=True)
    blocked_extensions = models.JSONField(_("blocked extensions"), null=True, blank=True)
    blocked_mime_types = models.JSONField(_("blocked MIME types"), null=True, blank=True)
    spam_tag_score = models.DecimalField(
        _("spam tag score"), max_digits=5, decimal_places=1, null=True, blank=True
    )
    spam_hold_score = models.DecimalField(
        _("spam hold score"), max_digits=5, decimal_places=1, null=True, blank=True
    )
    spam_reject_score = models.DecimalField(
        _("spam reject score"), max_digits=5, decimal_places=1, null=True, blank=True
    )
    antivirus = models.BooleanField(_("anti-virus"), null=True, blank=True)
    greylisting = models.BooleanField(_("greylisting"), null=True, blank=True)
    sender_allow = models.JSONField(_("allowed senders"), null=True, blank=True)
    sender_block = models.JSONField(_("blocked senders"), null=True, blank=True)
    # NULL inherits, like every field here ("" would be a value of its own).
    dmarc_failure = models.CharField(  # noqa: DJ001
        _("on DMARC failure"),
        max_length=8,
        choices=choices.DMARC_FAILURE_CHOICES,
        null=True,
        blank=True,
    )
    updated_at = models.DateTimeField(auto_now=True)

    audit_fields = ("protocol_access", *choices.FILTER_FIELDS)

    class Meta:
        abstract = True


class CustomerPolicy(PolicyFields):
    """Defaults a customer sets for its whole subtree (its primary key is the customer's)."""

    scope_path_field = "customer_path"

    customer = models.OneToOneField(
        Customer,
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="mail_policy",
        verbose_name=_("customer"),
    )
    customer_path = models.CharField(max_length=PATH_MAX, editable=False)

    class Meta:
        verbose_name = _("customer mail policy")
        verbose_name_plural = _("customer mail policies")

    def __str__(self) -> str:
        return f"mail policy of customer {self.customer_id}"

    @property
    def audit_customer(self) -> Customer:
        return self.customer


class Domain(ScopedMailModel):
    audit_fields = (
        "name",
        "customer",
        "is_enabled",
        "default_quota_mb",
        "catch_all",
        "description",
        "webmail_name",
    )

    name = models.CharField(_("domain"), max_length=253, unique=True)
    unicode_name = models.CharField(_("domain (Unicode)"), max_length=253)
    is_enabled = models.BooleanField(_("enabled"), default=True)
    default_quota_mb = models.PositiveIntegerField(
        _("default mailbox quota (MB)"), default=choices.DEFAULT_QUOTA_MB
    )
    catch_all = models.CharField(_("catch-all target"), max_length=254, blank=True)
    description = models.CharField(
        _("description"), max_length=200, blank=True, validators=[no_control_characters]
    )
    # The product name Roundcube shows to this domain's users (login page title, window
    # title); empty: the deployment's default (UMS_WEBMAIL_PRODUCT_NAME).
    webmail_name = models.CharField(
        _("webmail name"), max_length=64, blank=True, validators=[no_control_characters]
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("mail domain")
        verbose_name_plural = _("mail domains")
        ordering = ("name",)
        indexes = [models.Index(fields=["customer_path", "name"], name="mail_domain_scope_name")]

    def __str__(self) -> str:
        return self.unicode_name or self.name


class DomainPolicy(PolicyFields):
    """A domain's overrides of its customer's policy (primary key is the domain's)."""

    scope_path_field = "customer_path"

    domain = models.OneToOneField(
        Domain, primary_key=True, on_delete=models.CASCADE, related_name="policy"
    )
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="+")
    customer_path = models.CharField(max_length=PATH_MAX, editable=False)

    class Meta:
        verbose_name = _("domain mail policy")
        verbose_name_plural = _("domain mail policies")

    def __str__(self) -> str:
        return f"mail policy of domain {self.domain_id}"

    @property
    def audit_customer(self) -> Customer:
        return self.customer


class DomainAlias(ScopedMailModel):
    """Another name for a domain: every address at the alias reaches the same address there."""

    audit_fields = ("name", "domain", "is_enabled")

    domain = models.ForeignKey(
        Domain, on_delete=models.CASCADE, related_name="aliases", verbose_name=_("domain")
    )
    name = models.CharField(_("alias domain"), max_length=253, unique=True)
    unicode_name = models.CharField(_("alias domain (Unicode)"), max_length=253)
    is_enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("domain alias")
        verbose_name_plural = _("domain aliases")
        ordering = ("name",)

    def __str__(self) -> str:
        return self.unicode_name or self.name


class DkimKey(ScopedMailModel):
    """A DKIM key pair; the private key is encrypted at rest and never leaves through the API."""

    audit_fields = ("domain", "selector", "bits", "state")

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="dkim_keys")
    selector = models.CharField(_("selector"), max_length=63)
    bits = models.PositiveSmallIntegerField(_("key size"), default=choices.DKIM_DEFAULT_BITS)
    private_key = EncryptedTextField(editable=False)
    public_key = models.TextField(editable=False)
    state = models.CharField(
        _("state"), max_length=8, choices=choices.DKIM_STATES, default=choices.DKIM_ACTIVE
    )
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    # The last DNS check (mail.dkim_dns): after a rotation the new key signs only once
    # its TXT record was seen published (deploy.desired.signing_key).
    dns_status = models.CharField(
        _("DNS record"), max_length=8, choices=choices.DKIM_DNS_STATES, blank=True, default=""
    )
    dns_detail = models.CharField(_("DNS check detail"), max_length=300, blank=True, default="")
    dns_checked_at = models.DateTimeField(_("DNS checked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("DKIM key")
        verbose_name_plural = _("DKIM keys")
        ordering = ("-id",)
        constraints = [
            models.UniqueConstraint(fields=["domain", "selector"], name="dkim_unique_selector"),
            models.UniqueConstraint(
                fields=["domain"],
                condition=Q(state=choices.DKIM_ACTIVE),
                name="dkim_one_active_per_domain",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.selector}._domainkey.{self.domain_id}"


class Mailbox(ScopedMailModel):
    audit_fields = (
        "email",
        "display_name",
        "quota_mb",
        "is_enabled",
        "read_only",
        "can_delete",
        "can_send",
        "retention_days",
        "forward_to",
        "forward_keep_copy",
        "protocol_access",
        "hide_from_address_book",
    )

    domain = models.ForeignKey(
        Domain, on_delete=models.PROTECT, related_name="mailboxes", verbose_name=_("domain")
    )
    local_part = models.CharField(_("name"), max_length=64)
    email = models.CharField(_("address"), max_length=254, unique=True)
    display_name = models.CharField(
        _("display name"), max_length=150, blank=True, validators=[no_control_characters, trimmed]
    )
    password_hash = models.CharField(max_length=200, editable=False)
    password_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    quota_mb = models.PositiveIntegerField(_("quota (MB)"), default=choices.DEFAULT_QUOTA_MB)
    used_bytes = models.BigIntegerField(_("used space (bytes)"), null=True, blank=True)
    used_updated_at = models.DateTimeField(null=True, blank=True)
    # The last IMAP/POP3/webmail login a node reported; empty until a collector reports one
    # (the portal then says "never").
    last_login_at = models.DateTimeField(_("last login"), null=True, blank=True, editable=False)
    is_enabled = models.BooleanField(_("enabled"), default=True)
    read_only = models.BooleanField(_("read-only"), default=False)
    can_delete = models.BooleanField(_("can delete messages"), default=True)
    can_send = models.BooleanField(_("can send"), default=True)
    retention_days = models.PositiveSmallIntegerField(
        _("deleted items kept (days)"), default=choices.DEFAULT_RETENTION_DAYS
    )
    forward_to = models.JSONField(_("forward to"), default=list, blank=True)
    forward_keep_copy = models.BooleanField(_("keep a copy when forwarding"), default=True)
    protocol_access = models.JSONField(_("protocol access"), default=dict, blank=True)
    hide_from_address_book = models.BooleanField(_("hidden from the address book"), default=False)
    # The webmail TOTP seed (base32), Fernet-encrypted (ums.crypto); empty: webmail asks
    # for the password only. Set by mail.webmail.enable_webmail_two_factor.
    webmail_totp_secret = models.TextField(blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("mailbox")
        verbose_name_plural = _("mailboxes")
        ordering = ("email",)
        constraints = [
            models.UniqueConstraint(fields=["domain", "local_part"], name="mailbox_unique_local")
        ]
        indexes = [models.Index(fields=["customer_path", "email"], name="mail_mailbox_scope_email")]

    def __str__(self) -> str:
        return self.email

    @property
    def password_pending(self) -> bool:
        """Imported with a plain password that is not hashed yet: logins wait for it."""
        return self.password_hash == PENDING_HASH

    @property
    def used_percent(self) -> int | None:
        """Used space as a whole percentage of the quota (capped at 100); None if unmeasured."""
        if self.used_bytes is None or not self.quota_mb:
            return None
        return min(100, round(self.used_bytes * 100 / (self.quota_mb * 1024 * 1024)))

    @property
    def address_display(self) -> str:
        domain = self.domain
        return f"{self.local_part}@{domain.unicode_name or domain.name}"


class Alias(ScopedMailModel):
    """An address delivering to one or more targets; a group also shows in the address book."""

    audit_fields = ("email", "kind", "name", "targets", "is_enabled", "hide_from_address_book")

    domain = models.ForeignKey(
        Domain, on_delete=models.PROTECT, related_name="address_aliases", verbose_name=_("domain")
    )
    local_part = models.CharField(_("name"), max_length=64)
    email = models.CharField(_("address"), max_length=254, unique=True)
    kind = models.CharField(_("kind"), max_length=8, choices=choices.ALIAS_KINDS)
    name = models.CharField(
        _("display name"), max_length=150, blank=True, validators=[no_control_characters, trimmed]
    )
    targets = models.JSONField(_("targets"), default=list)
    is_enabled = models.BooleanField(_("enabled"), default=True)
    is_system = models.BooleanField(_("required address"), default=False, editable=False)
    hide_from_address_book = models.BooleanField(_("hidden from the address book"), default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("alias")
        verbose_name_plural = _("aliases")
        ordering = ("email",)
        constraints = [
            models.UniqueConstraint(fields=["domain", "local_part"], name="alias_unique_local")
        ]
        indexes = [models.Index(fields=["customer_path", "email"], name="mail_alias_scope_email")]

    def __str__(self) -> str:
        return self.email


class AutoResponder(models.Model):
    """The out-of-office reply of a mailbox (its primary key is the mailbox's)."""

    scope_path_field = "customer_path"
    audit_fields = ("is_enabled", "subject", "body", "start_date", "end_date", "interval_days")

    mailbox = models.OneToOneField(
        Mailbox, primary_key=True, on_delete=models.CASCADE, related_name="autoresponder"
    )
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="+")
    customer_path = models.CharField(max_length=PATH_MAX, editable=False)
    is_enabled = models.BooleanField(_("enabled"), default=False)
    subject = models.CharField(
        _("subject"), max_length=200, validators=[no_control_characters, trimmed]
    )
    body = models.TextField(_("message"), max_length=10000)
    start_date = models.DateField(_("from"), null=True, blank=True)
    end_date = models.DateField(_("until"), null=True, blank=True)
    interval_days = models.PositiveSmallIntegerField(
        _("reply to the same sender at most every (days)"), default=7
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("auto-responder")
        verbose_name_plural = _("auto-responders")

    def __str__(self) -> str:
        return f"auto-responder of mailbox {self.mailbox_id}"

    @property
    def audit_customer(self) -> Customer:
        return self.customer


class SieveScript(ScopedMailModel):
    """A Sieve filter of a mailbox, written with the rule editor or as raw Sieve."""

    audit_fields = ("mailbox", "name", "mode", "rules", "script", "is_active")

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="sieve_scripts")
    name = models.CharField(_("name"), max_length=100, validators=[no_control_characters, trimmed])
    mode = models.CharField(_("mode"), max_length=5, choices=choices.SIEVE_MODES)
    rules = models.JSONField(_("rules"), default=list, blank=True)
    script = models.TextField(_("script"), max_length=65536)
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("Sieve filter")
        verbose_name_plural = _("Sieve filters")
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "name"], name="sieve_unique_name"),
            models.UniqueConstraint(
                fields=["mailbox"], condition=Q(is_active=True), name="sieve_one_active"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class MailUsage(models.Model):
    """What a customer itself holds (not its subtree); the limit checks sum these rows.

    Kept in step by the actions in the same transaction as the change, so counting a subtree
    of a million mailboxes is a sum over its customers, not a scan of the mailboxes.
    """

    scope_path_field = "customer_path"

    customer = models.OneToOneField(
        Customer, primary_key=True, on_delete=models.CASCADE, related_name="mail_usage"
    )
    customer_path = models.CharField(max_length=PATH_MAX, editable=False)
    domains = models.BigIntegerField(default=0)
    mailboxes = models.BigIntegerField(default=0)
    aliases = models.BigIntegerField(default=0)
    quota_mb = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = _("mail usage")
        verbose_name_plural = _("mail usage")

    def __str__(self) -> str:
        return f"mail usage of customer {self.customer_id}"


class CsvImport(models.Model):
    """An uploaded CSV waiting to be applied by its job; the content is encrypted at rest
    (it holds passwords) and wiped once the job has run."""

    PENDING = "pending"
    APPLIED = "applied"
    FAILED = "failed"

    scope_path_field = "customer_path"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    customer_path = models.CharField(max_length=PATH_MAX, editable=False)
    domain = models.ForeignKey(Domain, null=True, on_delete=models.SET_NULL, related_name="+")
    requested_by_id = models.BigIntegerField(null=True, blank=True)
    payload = EncryptedTextField(blank=True)
    row_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=8, default=PENDING)
    job_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("CSV import")
        verbose_name_plural = _("CSV imports")

    def __str__(self) -> str:
        return f"CSV import {self.pk}"


class PendingPassword(models.Model):
    """A plain password from a CSV import, waiting to be hashed (issue 19).

    The import job writes its mailboxes at once with :data:`mail.passwords.PENDING_HASH`
    (a value no password verifies) and the plaintext here, Fernet-encrypted at rest; the
    activation job (:mod:`mail.activation`) hashes it and deletes the row in the same
    transaction that stores the hash. Deleting the mailbox deletes the row; setting a new
    password deletes it too (the new password wins).
    """

    mailbox = models.OneToOneField(
        Mailbox, primary_key=True, on_delete=models.CASCADE, related_name="pending_password"
    )
    # The import it came from: one activation job per import shows that import's progress.
    upload = models.ForeignKey(CsvImport, null=True, on_delete=models.SET_NULL, related_name="+")
    secret = EncryptedTextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("password being activated")
        verbose_name_plural = _("passwords being activated")
        indexes = [models.Index(fields=["upload", "mailbox"], name="mail_pendingpw_upload")]

    def __str__(self) -> str:
        return f"pending password of mailbox {self.mailbox_id}"
