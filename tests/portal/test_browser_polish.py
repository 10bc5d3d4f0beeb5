"""The portal polish in real Chromium, at 1280 px and in Mongolian (the longest labels).

Loads the home dashboard, expands a customer in the tree (mouse and keyboard), opens a
failed job and the audit log, and checks that no page scrolls sideways. The audit log is
checked in English and Russian too. Screenshots go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures import PASSWORD, build_cast
from tests.portal.polish_data import build_tree
from tests.portal.test_browser import browser, playwright_sync, shot  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTH = 1280
OVERFLOW = "document.scrollingElement.scrollWidth"


def fits(page: Any) -> None:
    width = page.evaluate(OVERFLOW)
    assert width <= WIDTH, f"{page.url} scrolls sideways: {width}px"


def log_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_home_tree_failed_job_and_audit_fit_1280_in_mongolian(
    live_server: Any,
    browser: Any,  # noqa: F811
) -> None:
    cast = build_cast()
    tree = build_tree(cast)
    base = live_server.url
    expect = playwright_sync.expect
    console_errors: list[str] = []
    context = browser.new_context(viewport={"width": WIDTH, "height": 800}, locale="en-GB")
    page = context.new_page()
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

    log_in(page, base, cast.sub_admin.username)
    expect(page).to_have_url(f"{base}/")
    host = base.split("//", 1)[1].split(":")[0]
    context.add_cookies([{"name": "django_language", "value": "mn", "domain": host, "path": "/"}])

    # Home: counts, the alert, the failed job, charts; nothing wider than the window.
    page.goto(f"{base}/")
    expect(page.locator("html")).to_have_attribute("lang", "mn")
    stats = page.locator(".stat-value")
    expect(stats.first).to_have_text("3")  # customers: Government, Ministry, Department
    expect(page.locator(".dash-alerts")).to_contain_text("smtp1.gov.example")
    expect(page.locator(".chart svg")).to_have_count(2)
    nav_labels = page.locator(".sidenav .nav-label")
    # No label is cut inside a word: every label's words each fit on one line.
    for i in range(nav_labels.count()):
        label = nav_labels.nth(i)
        assert label.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), label.inner_text()
    fits(page)
    shot(page, "polish-01-home-mn")

    # The tree: expand Ministry in place with the mouse, collapse it with the keyboard.
    page.goto(f"{base}/customers/")
    toggle = page.locator(f'tr[data-tree-id="{cast.ministry.pk}"] .tree-toggle')
    expect(toggle).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(page.locator(f'tr[data-tree-id="{cast.department.pk}"]')).to_have_count(0)
    toggle.click()
    department = page.locator(f'tr[data-tree-id="{cast.department.pk}"]')
    expect(department).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(page).to_have_url(f"{base}/customers/")  # in place, no navigation
    padding = department.locator("td").first.evaluate("e => getComputedStyle(e).paddingLeft")
    assert float(padding.rstrip("px")) > 14  # indented one level
    shot(page, "polish-02-tree-expanded-mn")
    toggle.focus()
    page.keyboard.press("Enter")
    expect(department).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Space")
    expect(department).to_be_visible()
    fits(page)

    # A failed job: a red bar, the human message, never the traceback.
    page.goto(f"{base}/jobs/{tree.failed_job.pk}/")
    banner = page.locator(".job-failed")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Could not reach smtp1.gov.example: connection refused")
    color = banner.evaluate("e => getComputedStyle(e).borderLeftColor")
    assert color == "rgb(220, 38, 38)", color
    assert "Traceback" not in page.content()
    fits(page)
    shot(page, "polish-03-failed-job-mn")

    # The jobs list is in the navigation.
    page.locator(".sidenav a[href='/jobs/']").click()
    expect(page).to_have_url(f"{base}/jobs/")
    fits(page)

    # The audit log, in all three languages, within 1280 px.
    for language in ("mn", "ru", "en"):
        context.add_cookies(
            [{"name": "django_language", "value": language, "domain": host, "path": "/"}]
        )
        page.goto(f"{base}/audit/")
        expect(page.locator("table.audit-table tbody tr").first).to_be_visible()
        # Opened change details stay inside their column.
        page.locator("table.audit-table details summary").first.click()
        fits(page)
        shot(page, f"polish-04-audit-{language}")

    # The domain page: its header and History tab (English, where the header is longest).
    page.goto(f"{base}/mail/domains/{tree.domain.pk}/")
    expect(page.get_by_role("link", name="History")).to_be_visible()
    fits(page)
    shot(page, "polish-05-domain-en")

    # A phone in Mongolian: the bottom bar keeps whole labels; only the bar scrolls sideways.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.add_cookies(context.cookies())
    phone.add_cookies([{"name": "django_language", "value": "mn", "domain": host, "path": "/"}])
    mobile = phone.new_page()
    mobile.goto(f"{base}/")
    expect(mobile.locator("html")).to_have_attribute("lang", "mn")
    labels = mobile.locator(".sidenav .nav-label")
    for i in range(labels.count()):
        label = labels.nth(i)
        assert label.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), label.inner_text()
    assert mobile.evaluate(OVERFLOW) <= 390
    shot(mobile, "polish-06-phone-home-mn", full_page=False)
    phone.close()

    context.close()
    assert not console_errors, console_errors
