"""Serializer fields that keep bad input from ever reaching the database as a 500."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from ums import scoping
from ums.validators import no_control_characters, no_control_characters_multiline

MAX_ID = 2**63 - 1


class SafeCharField(serializers.CharField):
    """A CharField that refuses control characters and does not trim silently."""

    def __init__(self, *, multiline: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        self.validators.append(
            no_control_characters_multiline if multiline else no_control_characters
        )


class ScopedPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A foreign key whose choices are what the requesting administrator may see."""

    default_error_messages = {
        "does_not_exist": _("No such object (id {pk_value})."),
        "incorrect_type": _("Expected an id number, got {data_type}."),
    }

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        request = self.context.get("request")
        return scoping.scope_queryset(queryset, getattr(request, "user", None))

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("incorrect_type", data_type=type(data).__name__)
        if isinstance(data, str) and not data.isdigit():
            self.fail("incorrect_type", data_type="str")
        if not 0 < int(data) <= MAX_ID:
            self.fail("does_not_exist", pk_value=data)
        return super().to_internal_value(int(data))
