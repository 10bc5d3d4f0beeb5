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


def test_every_mail_form_page_renders_every_field_of_its_form(
    cast: Cast,
    objects: dict[str, Any],  # noqa: F811
    login: Callable[..., Client],  # noqa: F811
) -> None:
    """A form page shows an input for each field its form declares (a template condition
    that failed silently once left the new-domain page with nothing but its buttons)."""
    from django.urls import reverse

    client = login(cast.sub_admin)
    checked = 0
    for url in [*pages(cast, objects), *[reverse(n) for n in GLOBAL_PAGES]]:
        response = client.get(url)
        form = (response.context or {}).get("form") if response.status_code == 200 else None
        if form is None or not hasattr(form, "visible_fields"):
            continue
        body = response.content.decode()
        missing = [f.name for f in form.visible_fields() if f'name="{f.html_name}"' not in body]
        assert not missing, (url, missing)
        checked += 1
    assert checked >= 5
