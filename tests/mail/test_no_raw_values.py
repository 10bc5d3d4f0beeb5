"""No raw Python values on mail pages: no "None", "True" or "False" in the visible text."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from mail import actions
from tests.fixtures import Cast
from tests.mail.test_portal import GLOBAL_PAGES, objects, pages  # noqa: F401
from tests.portal.conftest import login  # noqa: F401

pytestmark = pytest.mark.django_db

RAW = re.compile(r"\b(None|True|False)\b")


def _visible_text(html: str) -> str:
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", html)


def test_mail_pages_show_no_raw_python_values(
    cast: Cast,
    objects: dict[str, Any],  # noqa: F811
    login: Callable[..., Client],  # noqa: F811
) -> None:
    from django.urls import reverse

    # Unset values everywhere: a policy row with nothing overridden, no limits, no usage.
    actions.update_domain_policy(
        actor=None, domain=objects["domain"], spam_tag_score=None, antivirus=None
    )
    client = login(cast.sub_admin)
    for url in [*pages(cast, objects), *[reverse(n) for n in GLOBAL_PAGES]]:
        response = client.get(url)
        if not response.get("Content-Type", "").startswith("text/html"):
            continue
        found = RAW.findall(_visible_text(response.content.decode()))
        assert not found, (url, found)
