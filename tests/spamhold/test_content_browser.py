"""The held-message page in Chromium: the content arrives after the page, bounded.

A node that accepts TCP but never speaks SSH: the page shows at once with the content
placeholder, static/js/fragment.js fetches the fragment, and the clear timeout message
replaces the placeholder, with the link to try again still there.
"""

from __future__ import annotations

from typing import Any

import pytest

from servers.models import Node
from tests.fixtures import PASSWORD, Cast
from tests.portal.test_browser import browser, playwright_sync  # noqa: F401 - fixture
from tests.spamhold.held import make_held
from tests.spamhold.test_content_async import (  # noqa: F401 - fixtures
    BOUND,
    TIMEOUT,
    fresh_action_context,
    hanging_node,
    silent,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_content_of_a_hanging_node_loads_after_the_page_with_a_clear_message(
    live_server: Any,
    browser: Any,  # noqa: F811 - the imported fixture
    cast: Cast,
    hanging_node: Node,  # noqa: F811 - the imported fixture
) -> None:
    held = make_held(cast.ministry, node=hanging_node, node_name=hanging_node.hostname)
    expect = playwright_sync.expect
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/login/?next=/spamhold/{held.pk}/")
    page.get_by_label("Username").fill(cast.sub_admin.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name=held.subject)).to_be_visible()
    box = page.locator("[data-fragment-url]").first
    expect(box).to_contain_text("Reading the content from the node")
    expect(box).to_contain_text(
        f"The node did not answer within {TIMEOUT} seconds", timeout=BOUND * 1000
    )
    # The log is read when asked for, in place, with the same bound and message.
    log = page.locator('[data-fragment-on="click"]')
    log.get_by_role("link", name="Read the log from the node").click()
    expect(log).to_contain_text(
        f"The node did not answer within {TIMEOUT} seconds", timeout=BOUND * 1000
    )
    expect(page).to_have_url(f"{live_server.url}/spamhold/{held.pk}/")  # stayed on the page
    assert errors == []
    context.close()
