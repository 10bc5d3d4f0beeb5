"""``/api/v1/rule-channel-keys/``: the GPG key each SpamAssassin update channel is signed
with, for operators only (the channels and their mirror belong to the installation).

``PUT /rule-channel-keys/<channel>/`` with ``publicKey`` (ASCII-armoured) and optionally
``keyId`` sets or replaces the key (checked with ``gpg --show-keys``: anything GnuPG cannot
read is a field error); ``DELETE`` removes it (the channel is then refused on the nodes).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from deploy.models import RuleChannelKey
from deploy.rule_updates import keys
from tenants.permissions import SERVERS_MANAGE, SERVERS_VIEW
from ums.api.serializers import StrictSerializer

from .certificates import OperatorOnly


class ChannelKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = RuleChannelKey
        fields = ("channel", "key_id", "fingerprints", "updated_at")


class ChannelKeyInputSerializer(StrictSerializer):
    public_key = serializers.CharField(max_length=keys.MAX_KEY_BYTES, trim_whitespace=True)
    key_id = serializers.CharField(max_length=42, required=False, allow_blank=True, default="")


class RuleChannelKeyListView(OperatorOnly):
    required_permissions = {"GET": SERVERS_VIEW}

    @extend_schema(responses={200: ChannelKeySerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(ChannelKeySerializer(RuleChannelKey.objects.all(), many=True).data)


class RuleChannelKeyDetailView(OperatorOnly):
    required_permissions = {"PUT": SERVERS_MANAGE, "DELETE": SERVERS_MANAGE}

    @extend_schema(request=ChannelKeyInputSerializer, responses={200: ChannelKeySerializer})
    def put(self, request: Request, channel: str) -> Response:
        serializer = ChannelKeyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            row = keys.set_channel_key(
                actor=request.user, channel=channel, **serializer.validated_data
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc
        return Response(ChannelKeySerializer(row).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, channel: str) -> Response:
        if not keys.delete_channel_key(actor=request.user, channel=channel):
            raise NotFound()
        return Response(status=status.HTTP_204_NO_CONTENT)
