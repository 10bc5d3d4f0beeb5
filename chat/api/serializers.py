"""API representation of chat organisations: the bot key is write-only, never shown."""

from __future__ import annotations

from rest_framework import serializers

from tenants.models import Customer
from ums.api.fields import SafeCharField, ScopedPrimaryKeyRelatedField
from ums.api.serializers import StrictModelSerializer

from ..actions import REALM_FIELDS
from ..models import ChatAccount, ChatRealm


class ChatRealmSerializer(StrictModelSerializer):
    customer = ScopedPrimaryKeyRelatedField(queryset=Customer.objects.all())
    name = SafeCharField(max_length=100)
    bot_api_key = SafeCharField(write_only=True, required=False, allow_blank=True, max_length=200)
    default_streams = serializers.ListField(
        child=SafeCharField(max_length=60), required=False, max_length=50
    )
    has_api_key = serializers.SerializerMethodField()
    users = serializers.SerializerMethodField()
    in_sync = serializers.SerializerMethodField()

    class Meta:
        model = ChatRealm
        fields = [
            *sorted(REALM_FIELDS | {"customer", "id"}),
            *("has_api_key", "users", "in_sync", "last_sync_at", "last_error", "created_at"),
        ]
        read_only_fields = ["last_sync_at", "last_error", "created_at"]

    def get_has_api_key(self, obj: ChatRealm) -> bool:
        return bool(obj.bot_api_key)

    def get_users(self, obj: ChatRealm) -> int:
        return obj.accounts.filter(is_active=True).count()

    def get_in_sync(self, obj: ChatRealm) -> bool:
        return obj.applied_generation >= obj.desired_generation


class ChatRealmUpdateSerializer(ChatRealmSerializer):
    customer = serializers.PrimaryKeyRelatedField(read_only=True)


class ChatAccountSerializer(serializers.ModelSerializer):
    class Meta:
        model = ChatAccount
        fields = ["id", "realm", "email", "full_name", "zulip_user_id", "is_active", "updated_at"]
