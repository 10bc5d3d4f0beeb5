"""Request bodies of the spam-hold API, validated strictly.

Every body is checked before anything happens: wrong types (``"startTime": "abc"``,
``"status": 5``), unknown keys, unknown statuses, an ``endTime`` before ``startTime`` and
times outside 0..253402300799 are field errors (400), never a 500 and never a partial
action. Responses are built as plain dicts in ``views.py`` (the sheet's shape is fixed).
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tenants.models import Customer
from ums.api.fields import MAX_ID, SafeCharField, ScopedPrimaryKeyRelatedField
from ums.api.serializers import StrictSerializer

from ..models import Outcome, Reason, Status
from ..query import MAX_EPOCH, valid_epoch

MAX_IDS = 1000


@extend_schema_field(OpenApiTypes.NUMBER)
class EpochField(serializers.Field):
    """Seconds since 1970 (UTC) as a JSON number; a numeric string only from a query string."""

    default_error_messages = {
        "invalid": gettext_lazy("Expected epoch seconds (a number), got {kind}."),
        "range": gettext_lazy("Must be between 0 and {maximum} (epoch seconds)."),
    }

    def to_internal_value(self, data: Any) -> float | int:
        value: Any = data
        if isinstance(data, str):
            try:
                value = float(data) if any(c in data for c in ".eE") else int(data)
            except ValueError:
                self.fail("invalid", kind="text")
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail("invalid", kind=type(data).__name__)
        if not valid_epoch(value):
            self.fail("range", maximum=MAX_EPOCH)
        return value

    def to_representation(self, value: Any) -> Any:
        return value


class StrictTextField(SafeCharField):
    """Text that must arrive as a JSON string (``5`` is refused, not turned into ``"5"``)."""

    default_error_messages = {"not_text": gettext_lazy("Expected text, got {kind}.")}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_text", kind=type(data).__name__)
        return super().to_internal_value(data)


class StrictIdField(serializers.IntegerField):
    """A database id: an integer (or its digits from a query string), 1..2**63-1."""

    default_error_messages = {"invalid": gettext_lazy("Expected an id number.")}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not (
            isinstance(data, int) or (isinstance(data, str) and data.isdigit() and len(data) < 20)
        ):
            self.fail("invalid")
        return super().to_internal_value(data)


def _text(limit: int) -> StrictTextField:
    return StrictTextField(max_length=limit, required=False, allow_blank=True)


class QuerySerializer(StrictSerializer):
    """The sheet's query body and the filters of every list, count and bulk action.

    ``startTime``/``endTime`` bound the received time (inclusive); ``fromDomain`` and
    ``toDomain`` match the whole domain; ``fromEmail``/``toEmail`` a whole address (case
    ignored); ``subject`` a case-insensitive substring; ``customer`` a whole subtree.
    """

    start_time = EpochField(required=False)
    end_time = EpochField(required=False)
    status = serializers.ChoiceField(choices=Status.choices, required=False)
    reason = serializers.ChoiceField(choices=Reason.choices, required=False)
    from_domain = _text(255)
    from_email = _text(320)
    to_domain = _text(255)
    to_email = _text(320)
    subject = _text(998)
    node = StrictIdField(required=False)
    customer = ScopedPrimaryKeyRelatedField(queryset=Customer.objects.all(), required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs.get("start_time"), attrs.get("end_time")
        if start is not None and end is not None and end < start:
            raise serializers.ValidationError(
                {"end_time": [_("endTime must not be before startTime.")]}
            )
        return attrs

    @staticmethod
    def to_filters(validated: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The plain JSON filters (``query.FILTER_KEYS``) and the chosen customer's path."""
        filters: dict[str, Any] = {}
        path = None
        for key, value in validated.items():
            if value in (None, ""):
                continue
            if key == "customer":
                filters[key], path = value.pk, value.path
            else:
                filters[key] = value
        return filters, path


class ActionSerializerBase(StrictSerializer):
    """Either ``ids`` (handled now) or ``filters`` (a bulk job), never both."""

    ids = serializers.ListField(
        child=StrictIdField(), min_length=1, max_length=MAX_IDS, required=False
    )
    filters = QuerySerializer(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        has_ids, has_filters = "ids" in attrs, "filters" in attrs
        if has_ids == has_filters:
            raise serializers.ValidationError(
                {"non_field_errors": [_("Give either ids or filters (one of them).")]}
            )
        if has_filters and not any(v not in (None, "") for v in attrs["filters"].values()):
            raise serializers.ValidationError(
                {
                    "filters": [
                        _(
                            "Give at least one filter; for everything on hold in your scope "
                            'send {"status": "ONHOLD"}.'
                        )
                    ]
                }
            )
        return attrs


class ReleaseSerializer(ActionSerializerBase):
    allow_sender = serializers.BooleanField(default=False)


class DeleteSerializer(ActionSerializerBase):
    block_sender = serializers.BooleanField(default=False)


class ReleaseOneSerializer(StrictSerializer):
    allow_sender = serializers.BooleanField(default=False)


class DeleteOneSerializer(StrictSerializer):
    block_sender = serializers.BooleanField(default=False)


class RefreshSerializer(StrictSerializer):
    nodes = serializers.ListField(
        child=StrictIdField(), min_length=1, max_length=MAX_IDS, required=False
    )


# ------------------------------------------------------------------- schema (documentation)


class SheetRecordSerializer(serializers.Serializer):
    """A record as the product sheet shows it, plus ``id`` (to act on the message)."""

    id = serializers.IntegerField()
    timestamp = serializers.FloatField(help_text="received, epoch seconds with milliseconds")
    status = serializers.ChoiceField(choices=Status.choices)
    expiry = serializers.IntegerField(help_text="epoch seconds")
    from_domain = serializers.CharField()
    from_email = serializers.CharField()
    to_email = serializers.CharField()
    subject = serializers.CharField()
    pending = serializers.ChoiceField(
        choices=Outcome.choices,
        allow_null=True,
        help_text="the outcome requested and not yet confirmed by the node (status stays "
        "ONHOLD until it is), else null",
    )


class OutcomeReportSerializer(serializers.Serializer):
    pending = serializers.ListField(
        child=serializers.IntegerField(), help_text="requested now; the node acts after"
    )
    request = serializers.IntegerField(allow_null=True)
    job = serializers.IntegerField(allow_null=True)
    job_url = serializers.CharField(allow_null=True)
    done = serializers.ListField(child=serializers.IntegerField())
    already = serializers.ListField(child=serializers.DictField())
    failed = serializers.ListField(child=serializers.DictField())
    not_found = serializers.ListField(child=serializers.IntegerField())
