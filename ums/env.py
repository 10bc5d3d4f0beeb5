"""Typed readers for environment variables.

Settings come only from the environment. Each helper fails loudly with the variable's
name when a value is malformed, so a typo in production stops the process at start
instead of silently falling back to a default.
"""

from __future__ import annotations

import os


class ImproperEnvironment(Exception):
    """An environment variable is present but cannot be understood."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperEnvironment(f"{name} must be a boolean (true/false), got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ImproperEnvironment(f"{name} must be an integer, got {value!r}") from exc
    if minimum is not None and number < minimum:
        raise ImproperEnvironment(f"{name} must be at least {minimum}, got {number}")
    return number


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


def env_json_object(name: str, default: dict | None = None) -> dict:
    """A JSON object (``{"key": value}``), for structured settings such as node options."""
    import json

    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return dict(default or {})
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ImproperEnvironment(f"{name} must be a JSON object: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ImproperEnvironment(f"{name} must be a JSON object, got {type(parsed).__name__}")
    return parsed
