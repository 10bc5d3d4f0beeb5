"""The export pages in real Chromium at 1280 px and at phone width (390 px): the button on
a mailbox page, the export form, the exports list with a download link (which downloads
the tar); nothing scrolls sideways."""

from __future__ import annotations

import datetime
import secrets
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from backup import crypto
from backup import export as export_mod
from backup.models import Export
from deploy.models import DomainPlacement
from tests.fixtures import build_cast
from tests.mail.helpers import make_domain, make_mailbox
from tests.portal.test_browser import browser, playwright_sync, shot  # noqa: F401 (fixture)
from tests.portal.test_browser_polish import log_in

from .test_snapshots import _imap_node

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PLAIN = b"tar bytes " * 100


@pytest.mark.parametrize("width", [1280, 390])
def test_export_pages_fit_and_download(
    live_server: Any,
    browser: Any,  # noqa: F811
    settings,
    tmp_path: Path,
    width: int,
) -> None:
    settings.VAR_DIR = tmp_path
    cast = build_cast()
    domain = make_domain(cast.ministry, "browser-export.example")
    mailbox = make_mailbox(domain, "alice-with-a-rather-long-name")
    DomainPlacement.objects.update_or_create(domain=domain, defaults={"node": _imap_node(cast)})
    export = Export.objects.create(
        token=secrets.token_hex(24),
        customer=domain.customer,
        customer_path=domain.customer_path,
        domain=domain,
        domain_name=domain.name,
        local_part=mailbox.local_part,
        status=Export.READY,
        size_bytes=len(PLAIN),
        sha256="ab" * 32,
        file_name="x.tar.enc",
        expires_at=timezone.now() + datetime.timedelta(hours=24),
    )
    export_mod.write_private(export_mod.file_path(export), crypto.encrypt_stream([PLAIN]))
    base = live_server.url
    expect = playwright_sync.expect
    context = browser.new_context(viewport={"width": width, "height": 800}, accept_downloads=True)
    page = context.new_page()
    log_in(page, base, cast.sub_admin.username)

    def fits() -> None:
        scroll = page.evaluate("document.scrollingElement.scrollWidth")
        assert scroll <= width, f"{page.url} scrolls sideways: {scroll}px"

    page.goto(f"{base}/mail/mailboxes/{mailbox.pk}/")
    page.get_by_role("link", name="Export Maildir").click()
    expect(page.get_by_label("From snapshot")).to_be_visible()
    fits()
    shot(page, f"export-form-{width}")
    page.goto(f"{base}/backup/exports/")
    link = page.get_by_role("link", name="Download")
    expect(link).to_be_visible()
    fits()
    shot(page, f"export-list-{width}")
    with page.expect_download() as download:
        link.click()
    assert Path(download.value.path()).read_bytes() == PLAIN
    context.close()
