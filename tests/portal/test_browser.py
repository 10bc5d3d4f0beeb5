"""The portal in a real browser: Debian's Chromium driven by Playwright.

Logs in, walks the customer tree, creates a sub-customer and an administrator, switches to
Russian, finds the change in the audit search, and saves screenshots (1280x800 and a phone
at 390x844) under ``test-artifacts/browser/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections

from audit.models import AuditRecord
from tenants.models import Administrator, Customer
from tests.fixtures import PASSWORD, build_cast

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "browser"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package")
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are
    # still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()
            # Under Playwright's sync API this code runs in another context, where Django
            # opened its own database connection: close it, or it outlives the test database.
            connections.close_all()


def shot(page: Any, name: str, *, full_page: bool = True) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def test_admin_walks_tree_creates_customer_and_admin_then_audits(
    live_server: Any, browser: Any
) -> None:
    cast = build_cast()
    base = live_server.url
    expect = playwright_sync.expect
    console_errors: list[str] = []

    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    page = context.new_page()
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

    # Anonymous: the customer tree sends us to the login page, keeping where we wanted to go.
    page.goto(f"{base}/customers/")
    expect(page).to_have_url(re.compile(r"/login/\?next=(%2F|/)customers(%2F|/)$"))
    shot(page, "01-login")
    page.get_by_label("Username").fill(cast.sub_admin.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    # The tree: home customer Government, with Ministry below it.
    expect(page).to_have_url(f"{base}/customers/")
    expect(page.get_by_role("heading", name="Government")).to_be_visible()
    shot(page, "02-customer-tree")
    page.get_by_role("link", name="Ministry").click()
    crumbs = page.get_by_role("navigation", name="Breadcrumbs")
    expect(crumbs).to_contain_text("Government")
    expect(crumbs).to_contain_text("Ministry")
    expect(crumbs).not_to_contain_text("Provider")  # above the administrator's scope
    page.get_by_role("link", name="Department").click()
    expect(page.get_by_role("heading", name="Department")).to_be_visible()
    page.get_by_role("navigation", name="Breadcrumbs").get_by_role("link", name="Ministry").click()
    expect(page.get_by_role("heading", name="Ministry", exact=True)).to_be_visible()
    shot(page, "03-customer-detail")

    # A new sub-customer of Ministry.
    page.get_by_role("link", name="New sub-customer").click()
    page.get_by_label("Name").fill("Browser Branch")
    page.get_by_label("Notes").fill("Created by the browser test")
    page.get_by_role("button", name="Create customer").click()
    expect(page.get_by_role("heading", name="Browser Branch")).to_be_visible()
    expect(page.get_by_role("status").first).to_contain_text("Browser Branch")
    shot(page, "04-customer-created")

    # An administrator at the new customer.
    page.get_by_role("link", name="Add").click()
    page.get_by_label("Username").fill("branch.admin")
    page.get_by_label("Full name").fill("Branch Administrator")
    page.get_by_label("Email").fill("branch.admin@example.org")
    page.locator("#id_password").fill("Velvet-Harbour-Compass-77")
    page.locator("#id_password_confirm").fill("Velvet-Harbour-Compass-77")
    page.get_by_label("View customers").check()
    page.get_by_label("Search the audit log").check()
    shot(page, "05-administrator-form")
    page.get_by_role("button", name="Create administrator").click()
    expect(page.get_by_role("heading", name="Branch Administrator")).to_be_visible()
    shot(page, "06-administrator-created")

    # Switch to Russian: the same page, now labelled in Russian.
    page.get_by_role("button", name="Русский").click()
    expect(page.get_by_role("navigation", name="Разделы")).to_contain_text("Клиенты")
    expect(page.get_by_role("heading", name="Права доступа")).to_be_visible()
    # Longer Russian labels must not make the desktop page scroll sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    shot(page, "07-russian")

    # The audit search finds the new customer.
    page.get_by_role("navigation", name="Разделы").get_by_role("link", name="Аудит").click()
    page.get_by_label("Текст").fill("Browser Branch")
    page.get_by_role("button", name="Найти").click()
    results = page.locator("table.audit-table tbody")
    expect(results).to_contain_text("customer.create")
    expect(results).to_contain_text("Browser Branch")
    shot(page, "08-audit-search")

    # A phone: the navigation becomes a bar at the bottom, the page stays usable.
    phone = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    phone.add_cookies(context.cookies())
    mobile = phone.new_page()
    mobile.goto(f"{base}/customers/{cast.ministry.pk}/")
    nav = mobile.get_by_role("navigation", name="Разделы")
    expect(nav).to_be_visible()
    box = nav.bounding_box()
    assert box is not None and box["y"] + box["height"] >= 844 - 2  # docked at the bottom
    width = mobile.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page scrolls sideways on a phone ({width}px)"
    shot(mobile, "09-phone-customer", full_page=False)
    mobile.goto(f"{base}/audit/")
    shot(mobile, "10-phone-audit", full_page=False)
    phone.close()
    context.close()

    assert not console_errors, console_errors  # e.g. a CSP violation would show here
    created = Customer.objects.get(name="Browser Branch")
    assert created.parent_id == cast.ministry.pk
    admin = Administrator.objects.get(username="branch.admin")
    assert admin.customer_id == created.pk
    assert set(admin.permissions) == {"customers.view", "audit.view"}
    assert AuditRecord.objects.filter(
        action="administrator.create", actor_id=cast.sub_admin.pk, channel="portal"
    ).exists()
