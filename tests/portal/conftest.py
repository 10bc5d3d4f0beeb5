"""Portal test helpers on top of the shared cast (tests/fixtures.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from tenants.models import Administrator
from ums import context


@pytest.fixture(autouse=True)
def fresh_action_context() -> Any:
    """Each test starts with no acting administrator.

    The login signal calls ``context.set_actor`` (outside any request when a test uses
    ``force_login``), and ``acting_as(None)`` keeps whoever is set: without a fresh context
    a test's system actions would be audited as the previous test's administrator.
    """
    with context.acting(channel=context.CHANNEL_SYSTEM):
        yield


@pytest.fixture
def login(client: Client) -> Callable[[Administrator], Client]:
    """``login(admin)``: the test client with a session of ``admin`` (English UI)."""

    def _login(admin: Administrator) -> Client:
        client.force_login(admin)
        client.cookies["django_language"] = "en"
        return client

    return _login


def form_errors(response: Any) -> dict[str, list[str]]:
    """The errors of the ``form`` in a rendered response's context."""
    form = response.context["form"]
    return {key: [str(e) for e in value] for key, value in form.errors.items()}
