"""System checks: the node options in UMS_NODE_SETTINGS must be known and well typed."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from . import node_settings


@register()
def check_node_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    options = getattr(settings, "UMS_CONVERGE", {}) or {}
    return [
        Error(f"UMS_NODE_SETTINGS: {problem}", id="deploy.E001")
        for problem in node_settings.problems(options)
    ]
