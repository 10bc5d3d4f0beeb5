"""No raw Python value reaches the screen: a populated portal shows no "None" as text."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from django.urls import reverse

from tests.fixtures import Cast
from tests.portal.polish_data import build_tree

pytestmark = pytest.mark.django_db

RAW = re.compile(r"\b(None|True|False)\b|\{\}|\[\]")


class _Text(HTMLParser):
    """Visible text and attribute values a user can read (titles, labels, placeholders)."""

    READABLE_ATTRS = {"title", "aria-label", "placeholder", "alt", "value"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "pre"):
            self._skip += 1
        for name, value in attrs:
            if name in self.READABLE_ATTRS and value:
                self.parts.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "pre") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def readable(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(parser.parts)


def pages(cast: Cast, tree: Any) -> list[str]:
    return [
        reverse("portal:home"),
        reverse("tenants:customer-list"),
        reverse("tenants:customer-detail", args=[cast.ministry.pk]),
        reverse("tenants:customer-children", args=[cast.government.pk]),
        reverse("tenants:administrator-list"),
        reverse("tenants:administrator-detail", args=[cast.ministry_viewer.pk]),
        reverse("tenants:settings"),
        reverse("audit:record-list"),
        reverse("audit:object-history", args=["tenants.customer", cast.ministry.pk]),
        reverse("portal:job-list"),
        reverse("portal:job-detail", args=[tree.failed_job.pk]),
        reverse("portal:job-detail", args=[tree.running_job.pk]),
        reverse("servers:home"),
        reverse("servers:node-detail", args=[tree.node.pk]),
        reverse("servers:zone-list"),
        reverse("enrolment:token-list"),
        reverse("spamhold:home"),
        reverse("mail:home"),
        reverse("mail:domain-detail", args=[tree.domain.pk]),
        reverse("mail:domain-aliases", args=[tree.domain.pk]),
        reverse("mail:domain-policy", args=[tree.domain.pk]),
        reverse("mail:domain-dkim", args=[tree.domain.pk]),
        reverse("mail:mailbox-search") + "?q=user",
        reverse("mail:mailbox-edit", args=[tree.mailbox.pk]),
        reverse("spamhold:message", args=[tree.held.pk]),
    ]


def test_populated_pages_show_no_raw_python_values(cast: Cast, login: Any) -> None:
    tree = build_tree(cast)
    client = login(cast.sub_admin)
    for url in pages(cast, tree):
        response = client.get(url)
        assert response.status_code == 200, url
        text = readable(response.content.decode())
        match = RAW.search(text)
        context = text[max(0, match.start() - 80) : match.end() + 40] if match else ""
        assert match is None, f"{url}: {context!r}"


def test_the_check_itself_sees_raw_values() -> None:
    assert RAW.search(readable("<p>Quota: None</p>"))
    assert RAW.search(readable('<input value="None">'))
    assert not RAW.search(readable("<script>var x = None;</script><p>Nonetheless</p>"))
