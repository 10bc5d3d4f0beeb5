"""``GET /api/v1/licence/`` (the licence, its use and warnings) and ``PUT`` (install one).

Operators only (administrators of a top-level customer; ``servers.view`` to read,
``servers.manage`` to install): anyone else gets 403. A refused licence answers 400 with
the reason on ``text``; nothing changes.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ums.api.serializers import StrictSerializer

from . import actions, banner, document, state


class LicenceTermsSerializer(serializers.Serializer):
    licence_id = serializers.CharField()
    licensee = serializers.CharField()
    issued = serializers.DateField()
    expires = serializers.DateField()
    model = serializers.ChoiceField(choices=list(document.MODEL_LABELS))
    limit = serializers.IntegerField()
    key_id = serializers.CharField()


class NoticeSerializer(serializers.Serializer):
    level = serializers.CharField()
    text = serializers.CharField()


class LicenceStatusSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=[state.UNLICENSED, state.VALID, state.EXPIRED, state.INVALID],
        help_text="unlicensed: none installed, nothing is limited; invalid: the installed "
        "licence fails verification and billable creates are refused.",
    )
    licence = LicenceTermsSerializer(allow_null=True)
    error = serializers.CharField(help_text="why an installed licence is invalid")
    used = serializers.FloatField(help_text="current use in the model's unit (GB for storage)")
    percent = serializers.IntegerField(allow_null=True)
    days_left = serializers.IntegerField(allow_null=True)
    installed_at = serializers.DateTimeField(allow_null=True)
    warnings = NoticeSerializer(many=True)


class LicenceInstallSerializer(StrictSerializer):
    text = serializers.CharField(
        max_length=document.MAX_TEXT, help_text="the whole licence file", trim_whitespace=False
    )


def status_data(status: state.Status) -> dict[str, Any]:
    return {
        "state": status.state,
        "licence": vars(status.licence) if status.licence is not None else None,
        "error": status.error,
        "used": status.used_display,
        "percent": status.percent,
        "days_left": status.days_left,
        "installed_at": status.installed.installed_at if status.installed else None,
        "warnings": [{"level": n.level, "text": n.text} for n in banner.describe(status)],
    }


class LicenceView(APIView):
    """The installation's licence: terms, use against the limit, days left, warnings."""

    required_permissions = {"GET": actions.VIEW_PERMISSION, "PUT": actions.MANAGE_PERMISSION}

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if not actions.is_operator(request.user):
            raise PermissionDenied(
                gettext("Only operators of the installation manage its licence.")
            )

    @extend_schema(responses={200: LicenceStatusSerializer})
    def get(self, request: Request) -> Response:
        data = status_data(state.current())
        return Response(LicenceStatusSerializer(data).data)

    @extend_schema(request=LicenceInstallSerializer, responses={200: LicenceStatusSerializer})
    def put(self, request: Request) -> Response:
        serializer = LicenceInstallSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        actions.install_licence(actor=request.user, text=serializer.validated_data["text"])
        return Response(LicenceStatusSerializer(status_data(state.current())).data)
