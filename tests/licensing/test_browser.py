"""The licence page in Chromium, at 1280 px and on a phone: nothing overflows, no console
errors, and an upload through the real form installs the licence. Screenshots under
``test-artifacts/browser/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from licensing import actions
from licensing.models import InstalledLicence
from tests.fixtures import build_cast
from tests.licensing.conftest import make_licence
from tests.mail.helpers import make_domain, make_mailbox
from tests.portal.test_browser import browser, playwright_sync, shot  # noqa: F401
from tests.portal.test_browser_polish import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_licence_page_fits_and_installs_by_upload(
    live_server: Any,
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    cast = build_cast()
    domain = make_domain(cast.ministry, "ministry.example")
    for n in range(9):
        make_mailbox(domain, f"user{n}")
    actions.install_licence(actor=None, text=make_licence(limit=10, licence_id="OLD-1"))
    expect = playwright_sync.expect
    for width, height, name in ((1280, 800, "licence-1280"), (390, 844, "licence-phone")):
        context = browser.new_context(viewport={"width": width, "height": height}, locale="en-GB")
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m, e=errors: e.append(m.text) if m.type == "error" else None)
        log_in(page, live_server.url, "root.admin")
        page.goto(f"{live_server.url}/settings/licence/")
        expect(page.get_by_text("90% of the licence is in use").first).to_be_visible()
        expect(page.locator("dd", has_text="9 of 10")).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (name, overflow)
        shot(page, name)
        assert not errors, errors
        context.close()
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    page = context.new_page()
    log_in(page, live_server.url, "root.admin")
    page.goto(f"{live_server.url}/settings/licence/")
    licence_file = tmp_path / "bigger.licence"
    licence_file.write_text(make_licence(limit=100, licence_id="NEW-2"))
    page.get_by_label("or the licence file").set_input_files(str(licence_file))
    page.get_by_role("button", name="Install licence").click()
    expect(page.get_by_text("Licence NEW-2 for Example ISP is installed.")).to_be_visible()
    expect(page.locator("dd", has_text="9 of 100")).to_be_visible()
    assert InstalledLicence.objects.first().licence_id == "NEW-2"
    context.close()
