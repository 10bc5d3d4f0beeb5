"""The usage report and the quota warnings in a real browser (Debian's Chromium through
Playwright): the table, picking a child, the CSV link, the banner; neither the desktop
nor the phone layout scrolls sideways. Screenshots in ``test-artifacts/browser/usage-*``."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.utils import timezone

from tests.fixtures import PASSWORD, build_cast
from tests.mail.helpers import make_domain, make_mailbox
from tests.portal.test_browser import browser, shot  # noqa: F401
from usage import collect, snapshot

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
MB = 1024 * 1024


def test_usage_report_and_quota_banner_in_chromium(live_server: Any, browser: Any) -> None:  # noqa: F811
    cast = build_cast()
    box = make_mailbox(make_domain(cast.ministry, "ministry.example"), "anna", quota_mb=200)
    other = make_mailbox(make_domain(cast.department, "dept.example"), "ben", quota_mb=1024)
    today = timezone.now().date()
    collect.record({box.pk: (120 * MB, 40), other.pk: (300 * MB, 900)})
    snapshot.take(today - datetime.timedelta(days=1))
    collect.record({box.pk: (170 * MB, 55)})  # over 80 %
    snapshot.take(today)
    expect = playwright_sync.expect
    for name, viewport in (("desktop", (1280, 800)), ("phone", (390, 844))):
        context = browser.new_context(
            viewport={"width": viewport[0], "height": viewport[1]}, locale="en-GB"
        )
        page = context.new_page()
        page.goto(f"{live_server.url}/login/")
        page.get_by_label("Username").fill(cast.sub_admin.username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_text("1 mailbox is over 80 % of its quota.")).to_be_visible()

        page.goto(f"{live_server.url}/usage/")
        expect(page.get_by_role("cell", name="Ministry")).to_be_visible()
        expect(page.get_by_role("link", name="Download CSV")).to_be_visible()
        expect(page.locator("figure.usage-chart svg rect")).to_have_count(2)
        shot(page, f"usage-01-report-{name}")
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport[0]

        page.get_by_role("link", name="Ministry").click()
        expect(page.get_by_role("cell", name="Department")).to_be_visible()
        page.get_by_label("Group by").select_option("day")
        page.get_by_role("button", name="Show").click()
        expect(page.get_by_role("cell", name=today.isoformat())).to_be_visible()
        expect(page.locator("figure.usage-chart svg rect")).to_have_count(2)
        shot(page, f"usage-02-by-day-{name}")
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport[0]

        page.goto(f"{live_server.url}/usage/quota-warnings/")
        expect(page.get_by_role("link", name="anna@ministry.example")).to_be_visible()
        shot(page, f"usage-03-quota-warnings-{name}")
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport[0]
        context.close()
