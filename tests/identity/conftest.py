"""Identity test helpers: second factors, password logins through the real login page."""

from __future__ import annotations

import datetime
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tenants import identity_actions as ia
from tenants.models import Administrator
from tenants.models_identity import TotpDevice
from tenants.twofactor import totp
from tests.fixtures import PASSWORD
from tests.identity import saml_idp
from tests.identity import slapd as slapd_harness
from ums import context


@pytest.fixture(autouse=True)
def fresh_action_context() -> Iterator[None]:
    """Each test starts with no acting administrator (see tests/portal/conftest.py)."""
    with context.acting(channel=context.CHANNEL_SYSTEM):
        yield


@pytest.fixture(scope="module")
def directory_server() -> Iterator[slapd_harness.Slapd]:
    """A real slapd (LDAPS and StartTLS on loopback) for the module's tests."""
    from tenants.sso import ldap as ldap_sso

    if not shutil.which("slapd"):
        pytest.fail("slapd is missing: scripts/install-test-packages.sh installs it")
    assert ldap_sso.AVAILABLE, "python-ldap / django-auth-ldap are not installed (ums[ldap])"
    server = slapd_harness.Slapd()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def idp_key() -> saml_idp.IdpKey:
    """The throwaway identity provider's signing key and certificate."""
    return saml_idp.make_key()


def now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def code_for(secret: str, offset_steps: int = 0) -> str:
    return totp.code_at(secret, now() + datetime.timedelta(seconds=30 * offset_steps))


def enrol_totp(admin: Administrator) -> tuple[str, list[str]]:
    """Set up an authenticator app for ``admin`` through the actions; returns (secret, codes).

    The confirming code is one step back, so the test's own "current" code is still unused.
    """
    device = ia.start_totp_enrolment(actor=admin)
    codes = ia.confirm_totp(actor=admin, code=code_for(device.secret, -1))
    return device.secret, codes


def fresh_secret(admin: Administrator) -> str:
    return TotpDevice.objects.get(owner=admin).secret


def password_login(
    client: Client, username: str, password: str = PASSWORD, ip: str = "198.51.100.20", **extra: Any
) -> Any:
    client.cookies["django_language"] = "en"
    return client.post(
        reverse("portal:login"),
        {"username": username, "password": password, **extra},
        REMOTE_ADDR=ip,
    )


def challenge(client: Client, code: str, next_path: str = "", ip: str = "198.51.100.20") -> Any:
    data = {"code": code}
    if next_path:
        data["next"] = next_path
    return client.post(reverse("portal:two-factor"), data, REMOTE_ADDR=ip)


def is_fully_in(client: Client) -> bool:
    """Whether the session reaches a page that the second-factor gate would hold back."""
    response = client.get(reverse("tenants:settings"))
    return response.status_code == 200
