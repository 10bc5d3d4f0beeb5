"""Security keys in a real browser: Debian's Chromium driven by Playwright, with Chromium's
virtual authenticator (CDP ``WebAuthn.*``) standing in for the YubiKey's hardware.

Registers two keys, logs in with each, removes one, and shows that a key the account does
not know gets nowhere. Screenshots go to ``test-artifacts/browser/identity-*.png``.
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
from tenants.models_identity import WebAuthnCredential
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
AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "usb",
    "hasResidentKey": False,
    "hasUserVerification": False,
    "automaticPresenceSimulation": True,
}

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()
            # Playwright's sync API runs this in another context with its own connection.
            connections.close_all()


class Keys:
    """Chromium's virtual authenticators: plug one in, unplug it, carry a key over."""

    def __init__(self, cdp: Any) -> None:
        self.cdp = cdp
        self.cdp.send("WebAuthn.enable", {"enableUI": False})
        self.current: str | None = None

    def plug_in(self, credentials: list[dict] | None = None) -> str:
        if self.current:
            self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": self.current})
        self.current = self.cdp.send(
            "WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR}
        )["authenticatorId"]
        for credential in credentials or []:
            wanted = {
                k: credential[k]
                for k in ("credentialId", "isResidentCredential", "rpId", "privateKey", "signCount")
            }
            self.cdp.send(
                "WebAuthn.addCredential",
                {"authenticatorId": self.current, "credential": wanted},
            )
        return self.current

    def stored(self) -> list[dict]:
        return self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.current})[
            "credentials"
        ]


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"identity-{name}.png"), full_page=True)


def test_security_keys_register_log_in_and_remove(
    live_server: Any, browser: Any, settings: Any
) -> None:
    # The relying party is the portal's public address: here, the live server on localhost
    # (a secure context for WebAuthn without TLS).
    settings.BASE_URL = live_server.url
    assert live_server.url.startswith("http://localhost:")
    cast = build_cast()
    base = live_server.url
    expect = playwright_sync.expect
    console_errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    page = context.new_page()
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda dialog: dialog.accept())
    keys = Keys(context.new_cdp_session(page))

    def log_in() -> None:
        page.goto(f"{base}/login/?next=/customers/")
        page.get_by_label("Username").fill("sub.admin")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in", exact=True).click()

    def log_out() -> None:
        page.get_by_role("button", name="Log out", exact=True).click()
        expect(page).to_have_url(re.compile(r"/login/"))

    # --- the pages around it render under the strict CSP ---------------------------------
    log_in()
    expect(page.get_by_role("heading", name="Government")).to_be_visible()
    page.goto(f"{base}/settings/two-factor/app/")
    qr = page.get_by_role("img", name="QR code to scan with the authenticator app")
    expect(qr).to_be_visible()
    assert qr.evaluate("img => img.naturalWidth") > 100  # the data: SVG really drew
    shot(page, "00-authenticator-app")
    page.goto(f"{base}/customers/{cast.government.pk}/identity/")
    expect(page.get_by_role("heading", name="SAML single sign-on")).to_be_visible()
    shot(page, "00-customer-sign-in-settings")

    # --- register a first key -----------------------------------------------------------
    page.goto(f"{base}/settings/two-factor/")
    keys.plug_in()
    page.get_by_label("Name of the new key").fill("YubiKey 5")
    shot(page, "01-two-factor-settings")
    page.get_by_role("button", name="Add a security key").click()
    expect(page.get_by_role("status").first).to_contain_text("Security key “YubiKey 5” added.")
    expect(page.get_by_text("YubiKey 5", exact=True)).to_be_visible()
    first_key = keys.stored()
    assert len(first_key) == 1

    # --- a second key, on another authenticator -------------------------------------------
    keys.plug_in()
    page.get_by_label("Name of the new key").fill("Backup key")
    page.get_by_role("button", name="Add a security key").click()
    expect(page.get_by_role("status").first).to_contain_text("Security key “Backup key” added.")
    shot(page, "02-two-keys")
    stored = WebAuthnCredential.objects.filter(owner=cast.sub_admin).order_by("id")
    assert [k.name for k in stored] == ["YubiKey 5", "Backup key"]
    assert AuditRecord.objects.filter(action="twofactor.key_added").count() == 2

    # --- log in with the backup key (the one plugged in) ----------------------------------
    log_out()
    log_in()
    expect(page).to_have_url(re.compile(r"/login/two-factor/\?next=/customers/"))
    expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()
    shot(page, "03-challenge")
    page.get_by_role("button", name="Use a security key").click()
    expect(page).to_have_url(f"{base}/customers/")
    expect(page.get_by_role("heading", name="Government")).to_be_visible()
    backup = WebAuthnCredential.objects.get(owner=cast.sub_admin, name="Backup key")
    assert backup.last_used_at is not None and backup.sign_count > 0
    passed = AuditRecord.objects.filter(action="auth.second_factor_passed").latest("seq")
    assert passed.changes["method"] == "webauthn"

    # --- any registered key works: now the first one -------------------------------------
    log_out()
    keys.plug_in(first_key)
    log_in()
    page.get_by_role("button", name="Use a security key").click()
    expect(page).to_have_url(f"{base}/customers/")
    assert WebAuthnCredential.objects.get(name="YubiKey 5").last_used_at is not None

    # --- remove the backup key (the check is fresh, so no step-up) ------------------------
    page.goto(f"{base}/settings/two-factor/")
    page.get_by_role("button", name="Remove Backup key").click()
    expect(page.get_by_role("status").first).to_contain_text("Security key “Backup key” removed.")
    assert list(
        WebAuthnCredential.objects.filter(owner=cast.sub_admin).values_list("name", flat=True)
    ) == ["YubiKey 5"]
    assert AuditRecord.objects.filter(action="twofactor.key_removed").exists()
    shot(page, "04-one-key-left")

    # --- a key this account does not know gets nowhere ------------------------------------
    log_out()
    keys.plug_in()
    log_in()
    page.get_by_role("button", name="Use a security key").click()
    expect(page.locator("[data-webauthn-status]")).to_contain_text("could not be used")
    expect(page).to_have_url(re.compile(r"/login/two-factor/"))
    page.goto(f"{base}/customers/")
    expect(page).to_have_url(re.compile(r"/login/two-factor/"))
    shot(page, "05-unknown-key-refused")
    context.close()
    # WebAuthn's own rejection of the unknown key is not a page error; CSP violations are.
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
