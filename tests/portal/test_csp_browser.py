"""Every page under the real Content-Security-Policy in Chromium: no violation anywhere.

Logs in, walks every portal page reachable by links from the home page (GET only, bounded),
then opens the API docs (Swagger UI from the sidecar, expanded operation included). Each
response must carry the policy without 'unsafe-inline', and the browser must report no
violation: neither a ``securitypolicyviolation`` event nor a console error.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urldefrag, urlsplit

import pytest

from tests.fixtures import build_cast
from tests.portal.polish_data import build_tree
from tests.portal.test_browser import browser  # noqa: F401 (fixture)
from tests.portal.test_browser_polish import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MAX_PAGES = 80
# Links a crawler must not follow: they change state or leave the session.
SKIP = ("logout", "/i18n/", "download", "export", ".vcf", ".csv", ".sh", "/api/", "/static/")
SKIP += ("/install/",)
# Records every violation the page sees, including ones raised before any listener of ours.
LISTEN = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(
  e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' ' + e.sourceFile + ':'
  + e.lineNumber));
"""


def checked_policy(response: Any) -> None:
    if response.request.resource_type != "document":
        return
    policy = response.headers.get("content-security-policy", "")
    assert "default-src 'self'" in policy, response.url
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, response.url


def test_no_csp_violation_on_any_page_or_the_api_docs(
    live_server: Any,
    browser: Any,  # noqa: F811
) -> None:
    cast = build_cast()
    build_tree(cast)
    base = live_server.url
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    context.add_init_script(LISTEN)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(f"{page.url}: {m.text}"))
    page.on("response", checked_policy)
    violations: list[str] = []

    def visit(url: str) -> None:
        page.goto(url)
        page.wait_for_load_state("networkidle")
        violations.extend(f"{url}: {v}" for v in page.evaluate("window.__csp.splice(0)"))

    visit(f"{base}/login/")
    log_in(page, base, cast.root_admin.username)
    # One page per URL shape (/customers/1/ stands for /customers/N/): every kind of page,
    # not sixty audit histories.
    seen: set[str] = set()
    queue = [f"{base}/"]
    while queue and len(seen) < MAX_PAGES:
        url = queue.pop(0)
        shape = re.sub(r"\d+", "N", url)
        if shape in seen:
            continue
        seen.add(shape)
        visit(url)
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            link = urldefrag(href).url
            parts = urlsplit(link)
            if link.startswith(base) and not parts.query and not any(s in link for s in SKIP):
                queue.append(link)
    assert len(seen) >= 40, sorted(seen)  # the walk really covered the portal (59 kinds today)

    # The API docs: Swagger UI renders the schema; expanding an operation draws more of it.
    visit(f"{base}/api/docs/")
    page.wait_for_selector(".swagger-ui .opblock-summary", timeout=30_000)
    page.locator(".swagger-ui .opblock-summary").first.click()
    page.wait_for_selector(".swagger-ui .opblock-body", timeout=10_000)
    violations.extend(f"docs: {v}" for v in page.evaluate("window.__csp.splice(0)"))
    context.close()

    assert not violations, violations
    assert not errors, errors
