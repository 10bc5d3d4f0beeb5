"""API representations of the mail objects.

Serializers check types and sizes (so nothing odd reaches the database as a 500); the
meaning of the values (addresses, passwords, scripts, limits) is checked by the actions,
whose ValidationErrors come back as field errors. Secrets never appear: no password hash,
no DKIM private key.
"""

from __future__ import annotations

import copy
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tenants.limits import MAX_LIMIT, ResourceLimit
from tenants.models import Customer
from ums.api.fields import SafeCharField, ScopedPrimaryKeyRelatedField
from ums.api.serializers import StrictModelSerializer, StrictSerializer

from .. import choices, dkim, policy, validators
from ..models import (
    Alias,
    AutoResponder,
    CustomerPolicy,
    DkimKey,
    Domain,
    DomainAlias,
    DomainPolicy,
    Mailbox,
    SieveScript,
)

ADDRESS_MAX = 254


@extend_schema_field(
    {
        "type": "object",
        "properties": {
            code: {"type": "string", "enum": list(choices.ACCESS_VALUES)}
            for code in choices.PROTOCOL_CODES
        },
    }
)
class ProtocolAccessField(serializers.DictField):
    """Written as {protocol: inherit|allow|deny}; read with every protocol listed."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("child", serializers.ChoiceField(choices=choices.ACCESS_VALUES))
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> dict[str, str]:
        return policy.own_protocols(value)


def address_list(maximum: int, **kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=ADDRESS_MAX, trim_whitespace=False),
        max_length=maximum,
        **kwargs,
    )


def string_list(maximum: int, item_max: int = 255) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=item_max),
        max_length=maximum,
        required=False,
        allow_null=True,
    )


def quota_field(**kwargs: Any) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=1, max_value=choices.MAX_QUOTA_MB, **kwargs)


# ------------------------------------------------------------------------------ domains


class DomainSerializer(StrictModelSerializer):
    name = SafeCharField(max_length=300)
    customer = ScopedPrimaryKeyRelatedField(queryset=Customer.objects.all())
    default_quota_mb = quota_field(required=False)
    catch_all = serializers.CharField(
        max_length=ADDRESS_MAX, required=False, allow_blank=True, trim_whitespace=False
    )
    description = SafeCharField(max_length=200, required=False, allow_blank=True)
    webmail_name = SafeCharField(
        max_length=64, required=False, allow_blank=True, trim_whitespace=False
    )
    contact_email = serializers.CharField(
        max_length=ADDRESS_MAX, required=False, write_only=True, trim_whitespace=False
    )

    def validate_webmail_name(self, value: str) -> str:
        # Checked here too, so its error comes with every other field's at once.
        try:
            return validators.webmail_name(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from exc

    class Meta:
        model = Domain
        fields = [
            "id",
            "name",
            "unicode_name",
            "customer",
            "is_enabled",
            "default_quota_mb",
            "catch_all",
            "description",
            "webmail_name",
            "contact_email",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["unicode_name", "created_at", "updated_at"]


class DomainUpdateSerializer(DomainSerializer):
    name = serializers.CharField(read_only=True)
    customer = serializers.PrimaryKeyRelatedField(read_only=True)
    contact_email = None

    class Meta(DomainSerializer.Meta):
        fields = [f for f in DomainSerializer.Meta.fields if f != "contact_email"]


class DnsRecordSerializer(serializers.Serializer):
    purpose = serializers.CharField()
    name = serializers.CharField()
    type = serializers.CharField()
    value = serializers.CharField()
    zone = serializers.CharField()
    dns_status = serializers.CharField(required=False, help_text="DKIM: last DNS check")
    signing = serializers.BooleanField(required=False, help_text="DKIM: the key that signs")


class JobAcceptedSerializer(serializers.Serializer):
    job = serializers.IntegerField(help_text="the queued job (/api/v1/jobs/{id}/)")


class DomainAliasSerializer(StrictModelSerializer):
    name = SafeCharField(max_length=300)
    domain = ScopedPrimaryKeyRelatedField(queryset=Domain.objects.all())

    class Meta:
        model = DomainAlias
        fields = ["id", "name", "unicode_name", "domain", "customer", "is_enabled", "created_at"]
        read_only_fields = ["unicode_name", "customer", "created_at"]


class DomainAliasUpdateSerializer(DomainAliasSerializer):
    name = serializers.CharField(read_only=True)
    domain = serializers.PrimaryKeyRelatedField(read_only=True)


class DkimKeySerializer(StrictModelSerializer):
    domain = ScopedPrimaryKeyRelatedField(queryset=Domain.objects.all())
    selector = SafeCharField(max_length=63, required=False)
    bits = serializers.ChoiceField(
        choices=[b for b, _label in choices.DKIM_KEY_SIZES], required=False
    )
    record_name = serializers.SerializerMethodField()
    record_value = serializers.SerializerMethodField()
    zone = serializers.SerializerMethodField()

    class Meta:
        model = DkimKey
        fields = [
            "id",
            "domain",
            "customer",
            "selector",
            "bits",
            "state",
            "public_key",
            "record_name",
            "record_value",
            "zone",
            "created_at",
            "retired_at",
            "dns_status",
            "dns_detail",
            "dns_checked_at",
        ]
        read_only_fields = [
            "customer", "state", "public_key", "created_at", "retired_at",
            "dns_status", "dns_detail", "dns_checked_at",
        ]  # fmt: skip

    def _domain_name(self, obj: DkimKey) -> str:
        names = self.context.setdefault("domain_names", {})
        if obj.domain_id not in names:
            names[obj.domain_id] = obj.domain.name
        return names[obj.domain_id]

    def get_record_name(self, obj: DkimKey) -> str:
        return dkim.record_name(obj.selector, self._domain_name(obj))

    def get_record_value(self, obj: DkimKey) -> str:
        return dkim.record_value(obj.public_key)

    def get_zone(self, obj: DkimKey) -> str:
        return dkim.zone_line(obj.selector, self._domain_name(obj), obj.public_key)


class DkimRotateSerializer(StrictSerializer):
    selector = SafeCharField(max_length=63, required=False)
    bits = serializers.ChoiceField(
        choices=[b for b, _label in choices.DKIM_KEY_SIZES], required=False
    )


# ----------------------------------------------------------------------------- policies


class PolicySerializer(StrictModelSerializer):
    """Own settings of a level (null inherits) plus the effective values and their sources."""

    protocol_access = ProtocolAccessField()
    blocked_extensions = string_list(choices.MAX_LIST_ENTRIES, 32)
    blocked_mime_types = string_list(choices.MAX_LIST_ENTRIES, 255)
    sender_allow = string_list(choices.MAX_LIST_ENTRIES, ADDRESS_MAX)
    sender_block = string_list(choices.MAX_LIST_ENTRIES, ADDRESS_MAX)
    spam_tag_score = serializers.DecimalField(
        max_digits=5, decimal_places=1, required=False, allow_null=True
    )
    spam_hold_score = serializers.DecimalField(
        max_digits=5, decimal_places=1, required=False, allow_null=True
    )
    spam_reject_score = serializers.DecimalField(
        max_digits=5, decimal_places=1, required=False, allow_null=True
    )
    antivirus = serializers.BooleanField(required=False, allow_null=True)
    greylisting = serializers.BooleanField(required=False, allow_null=True)
    dmarc_failure = serializers.ChoiceField(
        choices=choices.DMARC_FAILURE_CHOICES, required=False, allow_null=True
    )
    effective_protocol_access = serializers.SerializerMethodField()
    effective_filtering = serializers.SerializerMethodField()

    common_fields = [
        "protocol_access",
        *choices.FILTER_FIELDS,
        "effective_protocol_access",
        "effective_filtering",
        "updated_at",
    ]

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_effective_protocol_access(self, obj: Any) -> dict[str, Any]:
        return policy.effective_protocols(**self._level(obj))

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_effective_filtering(self, obj: Any) -> dict[str, Any]:
        return policy.effective_filtering(**self._level(obj))

    def _level(self, obj: Any) -> dict[str, Any]:
        raise NotImplementedError


class CustomerPolicySerializer(PolicySerializer):
    customer = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = CustomerPolicy
        fields = ["customer", *PolicySerializer.common_fields]
        read_only_fields = ["updated_at"]

    def _level(self, obj: CustomerPolicy) -> dict[str, Any]:
        return {"customer": obj.customer}


class DomainPolicySerializer(PolicySerializer):
    domain = serializers.PrimaryKeyRelatedField(read_only=True)
    customer = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = DomainPolicy
        fields = ["domain", "customer", *PolicySerializer.common_fields]
        read_only_fields = ["updated_at"]

    def _level(self, obj: DomainPolicy) -> dict[str, Any]:
        return {"customer": obj.domain.customer, "domain": obj.domain}


# ---------------------------------------------------------------------------- mailboxes


class CachedFieldsMixin:
    """Build a serializer class's fields once, hand each instance a deep copy.

    ModelSerializer introspects the model on every instantiation; for the most used
    endpoints (mailbox create and detail) that costs more than the database work. The
    fields depend only on the class (querysets are scoped later, per request).
    """

    def get_fields(self) -> dict[str, Any]:
        cls = type(self)
        cached = cls.__dict__.get("_cached_fields")
        if cached is None:
            cached = super().get_fields()  # type: ignore[misc]
            cls._cached_fields = cached  # type: ignore[attr-defined]
        return copy.deepcopy(cached)


class MailboxSerializer(CachedFieldsMixin, StrictModelSerializer):
    domain = ScopedPrimaryKeyRelatedField(queryset=Domain.objects.all())
    local_part = SafeCharField(max_length=64)
    password = serializers.CharField(
        write_only=True, max_length=1024, trim_whitespace=False, style={"input_type": "password"}
    )
    display_name = SafeCharField(max_length=150, required=False, allow_blank=True)
    quota_mb = quota_field(required=False)
    retention_days = serializers.IntegerField(
        min_value=1, max_value=choices.MAX_RETENTION_DAYS, required=False
    )
    forward_to = address_list(choices.MAX_FORWARDS, required=False)
    protocol_access = ProtocolAccessField()
    password_pending = serializers.BooleanField(
        read_only=True,
        help_text="imported with a plain password that is still being hashed: no login "
        "works until it is false (mail is delivered meanwhile)",
    )

    class Meta:
        model = Mailbox
        fields = [
            "id",
            "email",
            "local_part",
            "domain",
            "customer",
            "display_name",
            "password",
            "quota_mb",
            "used_bytes",
            "is_enabled",
            "read_only",
            "can_delete",
            "can_send",
            "retention_days",
            "forward_to",
            "forward_keep_copy",
            "protocol_access",
            "hide_from_address_book",
            "password_changed_at",
            "password_pending",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "email",
            "customer",
            "used_bytes",
            "password_changed_at",
            "password_pending",
            "created_at",
            "updated_at",
        ]
        # Uniqueness is the action's job (under a lock, across mailboxes and aliases).
        validators: list[Any] = []


class MailboxListSerializer(serializers.ModelSerializer):
    """The list's row: what a table shows; details (access, forwarding) are on the object."""

    password_pending = serializers.BooleanField(read_only=True)

    class Meta:
        model = Mailbox
        fields = [
            "id",
            "email",
            "local_part",
            "domain",
            "customer",
            "display_name",
            "quota_mb",
            "used_bytes",
            "is_enabled",
            "read_only",
            "can_delete",
            "can_send",
            "password_pending",
            "created_at",
        ]
        # The fast list (api.views.ValuesListMixin): output field -> column (passwordPending
        # is derived from the hash column there, which is never output).
        columns = {f: f"{f}_id" if f in ("domain", "customer") else f for f in fields} | {
            "password_pending": "password_hash"
        }
        read_only_fields = fields


class MailboxDetailSerializer(MailboxSerializer):
    effective_protocol_access = serializers.SerializerMethodField()
    webmail_two_factor = serializers.SerializerMethodField(
        help_text="webmail asks for a one-time code (POST/DELETE webmail-two-factor/)"
    )

    class Meta(MailboxSerializer.Meta):
        fields = [*MailboxSerializer.Meta.fields, "effective_protocol_access", "webmail_two_factor"]

    def get_webmail_two_factor(self, obj: Mailbox) -> bool:
        return bool(obj.webmail_totp_secret)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_effective_protocol_access(self, obj: Mailbox) -> dict[str, Any]:
        return policy.mailbox_protocols(obj)


class MailboxUpdateSerializer(MailboxDetailSerializer):
    domain = serializers.PrimaryKeyRelatedField(read_only=True)
    local_part = serializers.CharField(read_only=True)
    password = None

    class Meta(MailboxDetailSerializer.Meta):
        fields = [f for f in MailboxDetailSerializer.Meta.fields if f != "password"]


class MailboxPasswordSerializer(StrictSerializer):
    password = serializers.CharField(max_length=1024, trim_whitespace=False)


class WebmailTwoFactorSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="base32 TOTP seed, shown once")
    uri = serializers.CharField(help_text="otpauth:// URI for an authenticator app")


# ------------------------------------------------------------------------------ aliases


class AliasSerializer(StrictModelSerializer):
    domain = ScopedPrimaryKeyRelatedField(queryset=Domain.objects.all())
    local_part = SafeCharField(max_length=64)
    kind = serializers.ChoiceField(choices=choices.ALIAS_KINDS, required=False)
    name = SafeCharField(max_length=150, required=False, allow_blank=True)
    targets = address_list(choices.MAX_ALIAS_TARGETS)

    class Meta:
        model = Alias
        fields = [
            "id",
            "email",
            "local_part",
            "domain",
            "customer",
            "kind",
            "name",
            "targets",
            "is_enabled",
            "is_system",
            "hide_from_address_book",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["email", "customer", "is_system", "created_at", "updated_at"]
        validators: list[Any] = []


class AliasUpdateSerializer(AliasSerializer):
    domain = serializers.PrimaryKeyRelatedField(read_only=True)
    local_part = serializers.CharField(read_only=True)
    targets = address_list(choices.MAX_ALIAS_TARGETS, required=False)


# ----------------------------------------------------------------------- auto-responders


class AutoResponderSerializer(StrictModelSerializer):
    mailbox = ScopedPrimaryKeyRelatedField(queryset=Mailbox.objects.all())
    subject = SafeCharField(max_length=200, required=False, allow_blank=True)
    body = serializers.CharField(
        max_length=10000, required=False, allow_blank=True, trim_whitespace=False
    )
    interval_days = serializers.IntegerField(min_value=1, max_value=365, required=False)
    script = serializers.SerializerMethodField()

    class Meta:
        model = AutoResponder
        fields = [
            "mailbox",
            "customer",
            "is_enabled",
            "subject",
            "body",
            "start_date",
            "end_date",
            "interval_days",
            "script",
            "updated_at",
        ]
        read_only_fields = ["customer", "updated_at"]

    def get_script(self, obj: AutoResponder) -> str:
        from ..actions import autoresponder_script

        return autoresponder_script(obj, obj.mailbox.email)


class AutoResponderUpdateSerializer(AutoResponderSerializer):
    mailbox = serializers.PrimaryKeyRelatedField(read_only=True)


# -------------------------------------------------------------------------------- Sieve


class SieveScriptSerializer(StrictModelSerializer):
    mailbox = ScopedPrimaryKeyRelatedField(queryset=Mailbox.objects.all())
    name = SafeCharField(max_length=100)
    mode = serializers.ChoiceField(choices=choices.SIEVE_MODES, required=False)
    rules = serializers.JSONField(required=False)
    script = serializers.CharField(
        max_length=65536, required=False, trim_whitespace=False, allow_blank=True
    )

    class Meta:
        model = SieveScript
        fields = [
            "id",
            "mailbox",
            "customer",
            "name",
            "mode",
            "rules",
            "script",
            "is_active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["customer", "created_at", "updated_at"]
        # No validators derived from the model's unique constraints: activating a script
        # switches the mailbox's active one (mail.actions, one transaction) instead of
        # failing "one active per mailbox", and the action names a duplicate name itself.
        validators: list = []


class SieveScriptUpdateSerializer(SieveScriptSerializer):
    mailbox = serializers.PrimaryKeyRelatedField(read_only=True)
    name = SafeCharField(max_length=100, required=False)


class SieveCheckSerializer(StrictSerializer):
    script = serializers.CharField(max_length=65536, trim_whitespace=False)


class SieveCheckResultSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    error = serializers.CharField(allow_null=True)


# ------------------------------------------------------------------------------- limits


class ResourceLimitSerializer(StrictModelSerializer):
    customer = serializers.PrimaryKeyRelatedField(read_only=True)
    max_domains = serializers.IntegerField(
        min_value=0, max_value=MAX_LIMIT, required=False, allow_null=True
    )
    max_mailboxes = serializers.IntegerField(
        min_value=0, max_value=MAX_LIMIT, required=False, allow_null=True
    )
    max_aliases = serializers.IntegerField(
        min_value=0, max_value=MAX_LIMIT, required=False, allow_null=True
    )
    max_quota_gb = serializers.IntegerField(
        min_value=0, max_value=MAX_LIMIT, required=False, allow_null=True
    )
    max_cloud_gb = serializers.IntegerField(
        min_value=0, max_value=MAX_LIMIT, required=False, allow_null=True
    )
    max_chat_users = serializers.IntegerField(
        min_value=0, max_value=MAX_LIMIT, required=False, allow_null=True
    )
    usage = serializers.SerializerMethodField()

    class Meta:
        model = ResourceLimit
        fields = [
            "customer",
            "max_domains",
            "max_mailboxes",
            "max_aliases",
            "max_quota_gb",
            "max_cloud_gb",
            "max_chat_users",
            "usage",
            "updated_at",
        ]
        read_only_fields = ["updated_at"]

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_usage(self, obj: ResourceLimit) -> dict[str, int]:
        usage = self.context.get("usage", {}).get(obj.customer_path)
        if usage is None:
            # Every registered provider: mail's counts and the cloud files quota.
            from tenants.limits import subtree_usage

            usage = subtree_usage([obj.customer_path])[obj.customer_path]
        return {
            "domains": usage["domains"],
            "mailboxes": usage["mailboxes"],
            "aliases": usage["aliases"],
            "quota_mb": usage["quota_gb"],
            "cloud_mb": usage.get("cloud_gb", 0),
            # Counted by the chat app's usage provider (tenants.limits.subtree_usage).
            "chat_users": usage.get("chat_users", 0),
        }


# --------------------------------------------------------------------------- address book


class AddressBookSerializer(serializers.ModelSerializer):
    class Meta:
        model = Customer
        fields = ["id", "name", "path"]


class AddressBookEntrySerializer(serializers.Serializer):
    kind = serializers.CharField()
    id = serializers.IntegerField()
    email = serializers.CharField()
    name = serializers.CharField()
    members = serializers.ListField(child=serializers.CharField())


# ------------------------------------------------------------------------------- import


class CsvImportRequestSerializer(StrictSerializer):
    csv = serializers.CharField(max_length=20 * 1024 * 1024, trim_whitespace=False)
    domain = ScopedPrimaryKeyRelatedField(queryset=Domain.objects.all(), required=False)
    dry_run = serializers.BooleanField(default=True)

    def validate_csv(self, value: str) -> str:
        if "\x00" in value:
            raise serializers.ValidationError(_("The file contains NUL bytes; is it really CSV?"))
        return value


class CsvImportSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    customer = serializers.IntegerField(source="customer_id")
    domain = serializers.IntegerField(source="domain_id", allow_null=True)
    row_count = serializers.IntegerField()
    status = serializers.CharField()
    job = serializers.IntegerField(source="job_id", allow_null=True)
    created_at = serializers.DateTimeField()
