"""API representations of customers, administrators and tokens."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework import serializers

from ums.api.fields import SafeCharField, ScopedPrimaryKeyRelatedField
from ums.api.serializers import StrictModelSerializer, StrictSerializer

from .. import permissions as perms
from ..models import NAME_MAX, Administrator, ApiToken, Customer


class CustomerSerializer(StrictModelSerializer):
    name = SafeCharField(max_length=NAME_MAX)
    notes = SafeCharField(max_length=2000, required=False, allow_blank=True, multiline=True)
    parent = ScopedPrimaryKeyRelatedField(queryset=Customer.objects.all())

    class Meta:
        model = Customer
        fields = ["id", "name", "parent", "path", "depth", "is_active", "notes", "created_at"]
        read_only_fields = ["path", "depth", "is_active", "created_at"]


class CustomerUpdateSerializer(CustomerSerializer):
    class Meta(CustomerSerializer.Meta):
        read_only_fields = ["path", "depth", "is_active", "created_at", "parent"]

    parent = serializers.PrimaryKeyRelatedField(read_only=True)


class CustomerMoveSerializer(StrictSerializer):
    parent = ScopedPrimaryKeyRelatedField(queryset=Customer.objects.all())


class CustomerBreadcrumbSerializer(serializers.ModelSerializer):
    class Meta:
        model = Customer
        fields = ["id", "name", "depth"]


PERMISSION_CHOICES = [(code, code) for code in perms.ALL]


class AdministratorSerializer(StrictModelSerializer):
    username = serializers.RegexField(
        r"^[A-Za-z0-9@.+_-]{1,150}$",
        max_length=150,
        error_messages={"invalid": _("Use letters, digits and @ . + - _ only.")},
    )
    full_name = SafeCharField(max_length=150)
    customer = ScopedPrimaryKeyRelatedField(queryset=Customer.objects.all())
    permissions = serializers.ListField(
        child=serializers.ChoiceField(choices=PERMISSION_CHOICES), max_length=len(perms.ALL)
    )
    password = serializers.CharField(
        write_only=True, max_length=512, trim_whitespace=False, style={"input_type": "password"}
    )

    class Meta:
        model = Administrator
        fields = [
            "id",
            "username",
            "full_name",
            "email",
            "customer",
            "permissions",
            "is_active",
            "language",
            "password",
            "last_login",
            "created_at",
        ]
        read_only_fields = ["last_login", "created_at"]


class AdministratorUpdateSerializer(AdministratorSerializer):
    username = serializers.CharField(read_only=True)
    password = None

    class Meta(AdministratorSerializer.Meta):
        fields = [f for f in AdministratorSerializer.Meta.fields if f != "password"]


class PasswordSerializer(StrictSerializer):
    password = serializers.CharField(max_length=512, trim_whitespace=False)


class ApiTokenSerializer(StrictModelSerializer):
    name = SafeCharField(max_length=100)
    owner = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "owner",
            "prefix",
            "read_only",
            "expires_at",
            "created_at",
            "revoked_at",
            "last_used_at",
            "last_used_ip",
        ]
        read_only_fields = [
            "prefix",
            "created_at",
            "revoked_at",
            "last_used_at",
            "last_used_ip",
        ]


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    """Returned once, on creation: the only time the full token is shown."""

    token = serializers.SerializerMethodField()

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]

    def get_token(self, obj: Any) -> str:
        return self.context.get("full_token", "")
