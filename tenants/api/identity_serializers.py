"""API representations of the two-factor policy, second-factor status, sessions, and the
SAML / LDAP settings of customers. Secrets (the bind password) are write-only."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from ums.api.fields import SafeCharField, ScopedPrimaryKeyRelatedField
from ums.api.serializers import StrictModelSerializer, StrictSerializer

from ..models import Administrator, Customer
from ..models_identity import LdapDirectory, SamlIdentityProvider, SessionRecord
from ..sso import saml
from .serializers import PERMISSION_CHOICES


class TwoFactorPolicySerializer(StrictModelSerializer):
    required_above = serializers.SerializerMethodField()
    effective = serializers.SerializerMethodField()

    class Meta:
        model = Customer
        fields = ["id", "name", "require_two_factor", "required_above", "effective"]
        read_only_fields = ["name"]

    def get_required_above(self, obj: Customer) -> bool:
        return obj.pk in self.context.get("required_above_ids", set())

    def get_effective(self, obj: Customer) -> bool:
        return obj.require_two_factor or self.get_required_above(obj)


class TwoFactorStatusSerializer(serializers.ModelSerializer):
    totp = serializers.BooleanField(source="has_totp", read_only=True)
    security_keys = serializers.IntegerField(source="key_count", read_only=True)
    enrolled = serializers.SerializerMethodField()
    required = serializers.SerializerMethodField()

    class Meta:
        model = Administrator
        fields = ["id", "username", "customer", "enrolled", "totp", "security_keys", "required"]
        read_only_fields = fields

    def get_enrolled(self, obj: Administrator) -> bool:
        return bool(obj.has_totp or obj.key_count)

    def get_required(self, obj: Administrator) -> bool:
        return obj.customer_path in self.context.get("required_paths", set())


class SessionSerializer(serializers.ModelSerializer):
    current = serializers.SerializerMethodField()

    class Meta:
        model = SessionRecord
        fields = [
            "id",
            "ip",
            "user_agent",
            "method",
            "created_at",
            "last_seen_at",
            "revoked_at",
            "current",
        ]
        read_only_fields = fields

    def get_current(self, obj: SessionRecord) -> bool:
        return obj.key_hash == self.context.get("current_hash")


class SamlProviderSerializer(StrictModelSerializer):
    customer = ScopedPrimaryKeyRelatedField(queryset=Customer.objects.all())
    entity_id = SafeCharField(max_length=500)
    x509_cert = serializers.CharField(max_length=20000, trim_whitespace=True)
    email_domains = serializers.ListField(
        child=serializers.CharField(max_length=253), required=False, max_length=100
    )
    jit_permissions = serializers.ListField(
        child=serializers.ChoiceField(choices=PERMISSION_CHOICES), required=False
    )
    sp_entity_id = serializers.SerializerMethodField()
    acs_url = serializers.SerializerMethodField()
    login_url = serializers.SerializerMethodField()

    class Meta:
        model = SamlIdentityProvider
        fields = [
            "id",
            "customer",
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
            "sp_entity_id",
            "acs_url",
            "login_url",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        # Uniqueness is the action's to check (it answers with a field error).
        validators: list[Any] = []
        extra_kwargs = {"slug": {"validators": []}}

    def get_sp_entity_id(self, obj: SamlIdentityProvider) -> str:
        return saml.sp_entity_id(obj)

    def get_acs_url(self, obj: SamlIdentityProvider) -> str:
        return saml.acs_url(obj)

    def get_login_url(self, obj: SamlIdentityProvider) -> str:
        return saml.login_url(obj)


class GroupPermissionSerializer(StrictSerializer):
    group = SafeCharField(max_length=500)
    permissions = serializers.ListField(child=serializers.ChoiceField(choices=PERMISSION_CHOICES))


class LdapDirectorySerializer(StrictModelSerializer):
    customer = ScopedPrimaryKeyRelatedField(queryset=Customer.objects.all())
    bind_password = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=1000,
        trim_whitespace=False,
        style={"input_type": "password"},
    )
    has_bind_password = serializers.SerializerMethodField()
    group_permissions = GroupPermissionSerializer(many=True, required=False)
    login_domains = serializers.ListField(
        child=serializers.CharField(max_length=253), max_length=100
    )
    ca_certificate = serializers.CharField(
        max_length=50000, required=False, allow_blank=True, trim_whitespace=True
    )

    class Meta:
        model = LdapDirectory
        fields = [
            "id",
            "customer",
            "enabled",
            "server_uri",
            "start_tls",
            "ca_certificate",
            "bind_dn",
            "bind_password",
            "has_bind_password",
            "user_search_base",
            "user_search_filter",
            "group_search_base",
            "group_type",
            "group_permissions",
            "attribute_full_name",
            "attribute_email",
            "login_domains",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def get_has_bind_password(self, obj: LdapDirectory) -> bool:
        return bool(obj.bind_password)


class CustomerUpdateOnlySerializerMixin:
    """On update the customer is fixed: drop the field from writes."""

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()  # type: ignore[misc]
        if getattr(self, "instance", None) is not None:
            fields["customer"] = serializers.PrimaryKeyRelatedField(read_only=True)
        return fields


class SamlProviderUpdateSerializer(CustomerUpdateOnlySerializerMixin, SamlProviderSerializer):
    pass


class LdapDirectoryUpdateSerializer(CustomerUpdateOnlySerializerMixin, LdapDirectorySerializer):
    pass


class ApiTokenCreateSerializer(StrictSerializer):
    """Token creation; ``otp`` is the app's current code, needed with token authentication
    when the owner has a second factor."""

    name = SafeCharField(max_length=100)
    read_only = serializers.BooleanField(required=False, default=False)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    otp = serializers.CharField(required=False, write_only=True, max_length=64)
