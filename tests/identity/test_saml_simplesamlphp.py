"""SAML sign-in through a real identity provider: SimpleSAMLphp (tests/identity/simplesamlphp.py)
as the Ministry's IdP, the portal as its service provider, over real HTTP.

In Chromium: the portal sends the browser to the IdP, the user signs in on the IdP's own form,
the IdP posts its signed answer back and the portal signs in the mapped administrator (by the
email attribute), or creates one with the asserted display name. Without a browser, the same
flow's response is edited before it reaches the portal and is refused; the untouched one is
accepted.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
from lxml import html

from audit.models import AuditRecord
from tenants import permissions as perms
from tenants.models import Administrator
from tests.fixtures import build_cast, make_admin
from tests.identity import saml_idp
from tests.identity.simplesamlphp import SimpleSamlIdp, running_idp
from tests.portal.test_browser import browser, playwright_sync  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]

SLUG = "ministry"
USERS = {
    "clerk:clerk-pass-1": {"email": ["clerk@ministry.example"], "displayName": ["Clerk One"]},
    "nomin:nomin-pass-1": {"email": ["nomin@ministry.example"], "displayName": ["Nomin Bat"]},
}


@pytest.fixture
def simplesamlphp(live_server: Any, settings: Any, tmp_path: Path) -> Iterator[SimpleSamlIdp]:
    # Every SAML URL of the portal is built from UMS_BASE_URL: point it at the live server.
    settings.BASE_URL = live_server.url
    sp = f"{live_server.url}/sso/saml/{SLUG}"
    with running_idp(
        tmp_path, users=USERS, sp_entity_id=f"{sp}/metadata/", sp_acs=f"{sp}/acs/"
    ) as server:
        yield server


def ministry_provider(idp: SimpleSamlIdp, **overrides: Any) -> Any:
    cast = build_cast()
    clerk = make_admin(cast.department, "clerk", [perms.CUSTOMERS_VIEW])
    Administrator.objects.filter(pk=clerk.pk).update(email="clerk@ministry.example")
    return saml_idp.make_provider(
        cast,
        idp.key,
        slug=SLUG,
        entity_id=idp.entity_id,
        sso_url=idp.sso_url,
        **overrides,
    )


def sign_in_at_idp(page: Any, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/sso/saml/{SLUG}/login/?next=/customers/")
    page.wait_for_url("https://127.0.0.1:*/**")  # the IdP's own login form
    page.locator("#username").fill(username)
    page.locator("#password").fill(password)
    page.locator("#submit_button").click()
    page.wait_for_url(f"{base}/customers/")


@pytest.mark.browser
def test_chromium_signs_in_through_simplesamlphp_and_maps_attributes(
    live_server: Any,
    simplesamlphp: SimpleSamlIdp,
    browser: Any,  # noqa: F811
) -> None:
    ministry_provider(simplesamlphp, allow_jit=True, jit_permissions=[perms.CUSTOMERS_VIEW])
    base = live_server.url

    # An existing administrator, found by the asserted email (NameID and attribute).
    context = browser.new_context(locale="en-GB", ignore_https_errors=True)
    page = context.new_page()
    sign_in_at_idp(page, base, "clerk", "clerk-pass-1")
    me = page.request.get(f"{base}/api/v1/administrators/me/").json()
    assert me["username"] == "clerk"
    context.close()
    login = AuditRecord.objects.filter(action="auth.saml_login").latest("seq")
    assert login.actor_id == Administrator.objects.get(username="clerk").pk

    # A first-time user: created in the Ministry with the IdP's display name and email.
    context = browser.new_context(locale="en-GB", ignore_https_errors=True)
    page = context.new_page()
    sign_in_at_idp(page, base, "nomin", "nomin-pass-1")
    context.close()
    nomin = Administrator.objects.get(email="nomin@ministry.example")
    assert nomin.full_name == "Nomin Bat"
    assert nomin.customer.name == "Ministry"
    assert nomin.permissions == [perms.CUSTOMERS_VIEW]
    assert not nomin.has_usable_password()


def idp_answer(base: str, session: requests.Session, username: str, password: str) -> dict:
    """Run the flow up to the IdP's auto-posting page; return that form's fields and action."""
    login_form = session.get(f"{base}/sso/saml/{SLUG}/login/", timeout=30)
    assert login_form.url.startswith("https://127.0.0.1:"), login_form.url
    doc = html.fromstring(login_form.content)
    fields = {i.get("name"): i.get("value", "") for i in doc.xpath("//form//input[@name]")}
    fields.update(username=username, password=password)
    answer = session.post(urljoin(login_form.url, "?"), data=fields, timeout=30)
    form = html.fromstring(answer.content).xpath("//form[.//input[@name='SAMLResponse']]")[0]
    data = {i.get("name"): i.get("value", "") for i in form.xpath(".//input[@name]")}
    return {"action": form.get("action"), "data": data}


def test_tampered_simplesamlphp_response_is_refused(
    live_server: Any, simplesamlphp: SimpleSamlIdp
) -> None:
    provider = ministry_provider(simplesamlphp)
    make_admin(provider.customer, "chief", [perms.CUSTOMERS_VIEW, perms.AUDIT_VIEW])
    Administrator.objects.filter(username="chief").update(email="chief@ministry.example")
    base = live_server.url
    session = requests.Session()
    session.verify = False  # the IdP's throwaway certificate
    session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides the line above
    answer = idp_answer(base, session, "clerk", "clerk-pass-1")
    assert answer["action"] == f"{base}/sso/saml/{SLUG}/acs/"
    genuine = answer["data"]["SAMLResponse"]
    xml = base64.b64decode(genuine).decode()
    assert "clerk@ministry.example" in xml and "Signature" in xml

    # The same signed response, claiming the chief instead of the clerk.
    forged = base64.b64encode(xml.replace("clerk@", "chief@").encode()).decode()
    pending = session.cookies.get("ums_saml_request")  # binds InResponseTo; a refusal drops it
    refused = session.post(
        answer["action"], data={**answer["data"], "SAMLResponse": forged}, timeout=30
    )
    assert refused.status_code == 403
    me = session.get(f"{base}/api/v1/administrators/me/", timeout=30)
    assert me.status_code in (401, 403)
    failure = AuditRecord.objects.filter(action="auth.saml_failed").latest("seq")
    assert "ignature" in failure.changes["reason"], failure.changes

    session.cookies.set("ums_saml_request", pending, path="/sso/")
    accepted = session.post(answer["action"], data=answer["data"], timeout=30)
    assert accepted.url == f"{base}/"
    me = session.get(f"{base}/api/v1/administrators/me/", timeout=30).json()
    assert me["username"] == "clerk"
