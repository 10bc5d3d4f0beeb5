"""Filter helpers whose values cannot overflow a database column."""

from __future__ import annotations

from typing import Any

import django_filters

from ums.api.fields import MAX_ID


class IdFilter(django_filters.NumberFilter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_ID)
        kwargs.setdefault("decimal_places", 0)
        super().__init__(*args, **kwargs)
