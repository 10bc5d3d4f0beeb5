"""API for enrolment tokens, and the unauthenticated endpoint bootstrapcore.sh posts to.

``/api/v1/enrolment-tokens/``: administrators list, create (the full token is in the
create response only) and revoke (DELETE) the tokens of zones in their scope.

``/api/v1/nodes/register/``: called by ``bootstrapcore.sh`` on a new node. It has no
administrator behind it: the enrolment token in the body is the authorisation, so the view
turns off authentication and is throttled per client address instead.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.conf import settings
from django.utils.translation import gettext as _
from djangorestframework_camel_case.parser import CamelCaseJSONParser
from djangorestframework_camel_case.render import CamelCaseJSONRenderer
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from ums.api.fields import SafeCharField, ScopedPrimaryKeyRelatedField
from ums.api.filters import IdFilter
from ums.api.serializers import StrictModelSerializer
from ums.api.viewsets import ScopedCreateListViewSet
from ums.middleware import client_ip

from .. import enrolment
from ..install import operator_command
from ..models import EnrolmentToken, Zone

DEFAULT_REGISTER_RATE = "30/minute"

# --------------------------------------------------------------------------- tokens


class EnrolmentTokenSerializer(StrictModelSerializer):
    name = SafeCharField(max_length=100)
    zone = ScopedPrimaryKeyRelatedField(queryset=Zone.objects.all())
    max_uses = serializers.IntegerField(
        min_value=1, max_value=enrolment.MAX_USES_LIMIT, required=False, default=1
    )
    expires_at = serializers.DateTimeField(
        required=False, help_text="Defaults to 24 hours from now; at most 365 days ahead."
    )
    state = serializers.SerializerMethodField()

    class Meta:
        model = EnrolmentToken
        fields = [
            "id",
            "name",
            "zone",
            "prefix",
            "max_uses",
            "uses",
            "expires_at",
            "revoked_at",
            "created_at",
            "state",
        ]
        read_only_fields = ["prefix", "uses", "revoked_at", "created_at"]

    def get_state(self, obj: EnrolmentToken) -> str:
        return enrolment.token_state(obj)


class EnrolmentTokenCreatedSerializer(EnrolmentTokenSerializer):
    """Returned once, on creation: the only time the full token is shown."""

    token = serializers.SerializerMethodField()
    command = serializers.SerializerMethodField()

    class Meta(EnrolmentTokenSerializer.Meta):
        fields = [*EnrolmentTokenSerializer.Meta.fields, "token", "command"]

    def get_token(self, obj: EnrolmentToken) -> str:
        return self.context.get("full_token", "")

    def get_command(self, obj: EnrolmentToken) -> str:
        return operator_command(self.context.get("full_token", ""))


class EnrolmentTokenFilterSet(django_filters.FilterSet):
    zone = IdFilter(field_name="zone_id")

    class Meta:
        model = EnrolmentToken
        fields = ["zone"]


class EnrolmentTokenViewSet(ScopedCreateListViewSet):
    """Enrolment tokens of the zones in scope. DELETE revokes (the row stays, audited)."""

    queryset = EnrolmentToken.objects.all()
    serializer_class = EnrolmentTokenSerializer
    filterset_class = EnrolmentTokenFilterSet
    permission_area = "servers"
    ordering = "-id"

    @extend_schema(responses={201: EnrolmentTokenCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, full = enrolment.create_enrolment_token(
            actor=request.user, **serializer.validated_data
        )
        data = EnrolmentTokenCreatedSerializer(token, context={"full_token": full}).data
        response = Response(data, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response

    def delete_object(self, instance: EnrolmentToken) -> None:
        enrolment.revoke_enrolment_token(actor=self.request.user, token=instance)


# --------------------------------------------------------------------------- registration


class NodeRegistrationThrottle(AnonRateThrottle):
    """Per client address; the address comes from the same trusted-proxy rule as audit.

    DRF's own ``get_ident`` believes any X-Forwarded-For header, which would let a caller
    pick a fresh address for every request and never be throttled.
    """

    scope = "node-register"

    def get_rate(self) -> str:
        return getattr(settings, "NODE_REGISTER_THROTTLE_RATE", DEFAULT_REGISTER_RATE)

    def get_ident(self, request: Request) -> str:
        return client_ip(request) or "unknown"


_DISKS_DOC = inline_serializer(
    "NodeRegistrationDisk",
    {
        "device": serializers.CharField(),
        "fstype": serializers.CharField(),
        "mount": serializers.CharField(),
        "size_kb": serializers.IntegerField(),
        "used_kb": serializers.IntegerField(),
        "avail_kb": serializers.IntegerField(),
    },
    many=True,
)
_REQUEST_DOC = inline_serializer(
    "NodeRegistration",
    {
        "token": serializers.CharField(help_text="The enrolment token (umsnode_…)."),
        "hostname": serializers.CharField(),
        "ssh_address": serializers.IPAddressField(),
        "ssh_port": serializers.IntegerField(min_value=1, max_value=65535),
        "host_keys": serializers.ListField(child=serializers.CharField()),
        "addresses": serializers.ListField(child=serializers.IPAddressField()),
        "os_id": serializers.CharField(),
        "os_version": serializers.CharField(),
        "os_pretty_name": serializers.CharField(),
        "cpus": serializers.IntegerField(),
        "memory_mb": serializers.IntegerField(),
        "disks": _DISKS_DOC,
    },
)
_RESPONSE_DOC = inline_serializer(
    "NodeRegistrationResult",
    {
        "node": serializers.IntegerField(),
        "status": serializers.CharField(),
        "message": serializers.CharField(),
    },
)
_ERROR_DOC = inline_serializer("NodeRegistrationError", {"message": serializers.CharField()})


class NodeRegistrationView(APIView):
    """``POST /api/v1/nodes/register/``: a node announces itself with an enrolment token."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes = [NodeRegistrationThrottle]
    parser_classes = [CamelCaseJSONParser]
    renderer_classes = [CamelCaseJSONRenderer]

    @extend_schema(
        request=_REQUEST_DOC,
        responses={
            201: _RESPONSE_DOC,
            200: _RESPONSE_DOC,
            400: OpenApiResponse(_ERROR_DOC, description="Malformed token or facts."),
            403: OpenApiResponse(
                _ERROR_DOC, description="Unknown, forged, spent, expired or revoked token."
            ),
            409: OpenApiResponse(_ERROR_DOC, description="Enrolled in another zone."),
            429: OpenApiResponse(_ERROR_DOC, description="Too many attempts from here."),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = request.data
        if not isinstance(data, dict):
            return Response(
                {"message": _("Expected a JSON object.")}, status=status.HTTP_400_BAD_REQUEST
            )
        facts = dict(data)
        token = facts.pop("token", None)
        try:
            node, created = enrolment.register_node(token_string=token, facts=facts)
        except enrolment.EnrolmentRefused as exc:
            return Response({"message": exc.message}, status=exc.status)
        if created:
            message = _("Node %(host)s registered in zone %(zone)s and waiting for approval.") % {
                "host": node.hostname,
                "zone": node.zone.name,
            }
        elif node.status == "pending":
            message = _(
                "Node %(host)s was already registered; its facts were updated. "
                "It is still waiting for approval."
            ) % {"host": node.hostname}
        else:
            message = _(
                "Node %(host)s is already registered (%(status)s); nothing was changed."
            ) % {"host": node.hostname, "status": node.get_status_display()}
        return Response(
            {"node": node.pk, "status": node.status, "message": message},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
