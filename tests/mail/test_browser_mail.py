"""The mail pages in a real browser (Debian's Chromium through Playwright).

Creates a mailbox with several bad fields and sees every error at once, fixes them, uses the
protocol grid, disables two mailboxes from the list, and checks that neither the desktop nor
the phone layout scrolls sideways. Screenshots go to ``test-artifacts/browser/mail-*.png``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from mail import actions
from mail.models import Mailbox
from tests.fixtures import PASSWORD, build_cast
from tests.mail.helpers import make_alias, make_domain, make_mailbox
from tests.portal.test_browser import browser, shot  # noqa: F401

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_mailbox_errors_grid_and_bulk_in_chromium(
    live_server: Any,
    browser: Any,  # noqa: F811
) -> None:
    cast = build_cast()
    domain = make_domain(cast.ministry, "ministry.example", default_quota_mb=200)
    measured = make_mailbox(domain, "anna", quota_mb=200)
    make_mailbox(domain, "ben")
    actions.record_used_space({measured.pk: 150 * 1024 * 1024})
    base = live_server.url
    expect = playwright_sync.expect
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    page = context.new_page()
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(cast.sub_admin.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    page.goto(f"{base}/mail/domains/{domain.pk}/")
    expect(page.locator("meter.usage")).to_have_count(1)
    expect(page.get_by_text("unknown of 200 MB")).to_be_visible()
    shot(page, "mail-01-mailbox-list")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280

    # Several bad fields: every one flagged in the same round.
    page.get_by_role("link", name="New mailbox").click()
    page.get_by_label("Name (before the @)").fill("bad name")
    page.get_by_label("Password").fill("short")
    page.get_by_label("Quota (MB)").fill("0")
    page.get_by_label("Forward to").fill("not an address")
    page.get_by_role("button", name="Create mailbox").click()
    # One field block in error per bad field (the password may have several messages).
    expect(page.locator(".field.has-error")).to_have_count(4)
    expect(page.get_by_text(re.compile("at least 10 characters"))).to_be_visible()
    shot(page, "mail-02-every-error")
    assert not Mailbox.objects.filter(local_part="bad name").exists()

    page.get_by_label("Name (before the @)").fill("carla")
    page.get_by_label("Password").fill("Granite-Meadow-Falcon-19")
    page.get_by_label("Quota (MB)").fill("100")
    page.get_by_label("Forward to").fill("")
    page.get_by_label("IMAPS (port 993): Deny").check()
    page.get_by_role("button", name="Create mailbox").click()
    expect(page.get_by_role("status").first).to_contain_text("carla@ministry.example")
    shot(page, "mail-03-mailbox-grid")
    carla = Mailbox.objects.get(email="carla@ministry.example")
    assert carla.protocol_access == {"imaps": "deny"}

    # Bulk: tick two, disable them.
    page.goto(f"{base}/mail/domains/{domain.pk}/")
    page.get_by_label("Select anna@ministry.example").check()
    page.get_by_label("Select ben@ministry.example").check()
    page.get_by_label("With the selected mailboxes").select_option("disable")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("status").first).to_contain_text("2 mailboxes disabled.")
    assert Mailbox.objects.filter(is_enabled=False).count() == 2

    # The policy pages use the same grid; "this domain" marks the domain's own override.
    page.goto(f"{base}/mail/domains/{domain.pk}/policy/")
    page.get_by_label("POP3S (port 995): Deny").check()
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_role("status").first).to_contain_text("Policy saved.")
    expect(page.locator(".protocol-grid")).to_contain_text("this domain")
    shot(page, "mail-05-domain-policy")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280

    # A group of six: three targets shown, the rest one click away, none clipped.
    make_alias(domain, "team", [f"member{i}@example.org" for i in range(6)], kind="group")
    page.goto(f"{base}/mail/domains/{domain.pk}/aliases/")
    page.get_by_text("and 3 more").click()
    expect(page.get_by_text("member5@example.org")).to_be_visible()
    shot(page, "mail-07-aliases")

    page.goto(f"{base}/mail/customers/{cast.ministry.pk}/")
    expect(page.locator(".protocol-grid")).to_be_visible()
    shot(page, "mail-06-customer-defaults")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280

    # Longer Russian and Mongolian labels must not make the list or the form scroll sideways.
    for button, code in (("Русский", "ru"), ("Монгол", "mn")):
        page.get_by_role("button", name=button).click()
        for url in (f"/mail/domains/{domain.pk}/", f"/mail/mailboxes/{carla.pk}/"):
            page.goto(f"{base}{url}")
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280, (code, url)
        shot(page, f"mail-08-mailbox-{code}")

    phone = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-GB")
    phone.add_cookies(context.cookies())
    small = phone.new_page()
    small.goto(f"{base}/mail/mailboxes/{carla.pk}/")
    shot(small, "mail-04-phone-mailbox")
    assert small.evaluate("document.documentElement.scrollWidth") <= 390 + 1
