"""Authenticator apps (TOTP): enrolment with a QR code, the login challenge, replay, drift,
recovery codes and throttling that a new login cannot reset."""

from __future__ import annotations

import base64
import re
import urllib.parse
from html import unescape as html_unescape

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse

from audit.models import AuditRecord
from tenants.models_identity import RecoveryCode, TotpDevice
from tenants.twofactor import qr, totp
from tests.fixtures import Cast
from tests.identity.conftest import (
    challenge,
    code_for,
    enrol_totp,
    is_fully_in,
    password_login,
)

pytestmark = pytest.mark.django_db


def test_enrolment_shows_qr_and_secret_and_needs_a_first_code(cast: Cast) -> None:
    client = Client()
    password_login(client, "sub.admin")
    page = client.get(reverse("tenants:totp-enrol"))
    assert page.status_code == 200
    assert page["Cache-Control"] == "no-store"
    html = page.content.decode()
    device = TotpDevice.objects.get(owner=cast.sub_admin)
    assert device.confirmed_at is None
    # The QR code is an SVG drawn by the portal (a data: URI), not an outside service.
    src = re.search(r'<img class="qr" src="([^"]+)"', html).group(1)
    assert src.startswith("data:image/svg+xml")
    svg = urllib.parse.unquote(src.split(",", 1)[1])
    assert "<svg" in svg and "<path" in svg
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    # It encodes the otpauth:// URI of this secret (the same URI renders the same picture).
    uri = totp.provisioning_uri(device.secret, "sub.admin")
    assert uri.startswith("otpauth://totp/") and f"secret={device.secret}" in uri
    assert html_unescape(src) == qr.svg_data_uri(uri)
    # The secret in text, grouped for typing.
    grouped = " ".join(device.secret[i : i + 4] for i in range(0, len(device.secret), 4))
    assert grouped in html
    # Reloading keeps the same pending secret (the app may already have scanned it).
    client.get(reverse("tenants:totp-enrol"))
    assert TotpDevice.objects.get(owner=cast.sub_admin).secret == device.secret

    wrong = client.post(reverse("tenants:totp-enrol"), {"code": "000000"})
    assert wrong.status_code == 200
    assert "not right" in wrong.content.decode()
    assert TotpDevice.objects.get(owner=cast.sub_admin).confirmed_at is None

    done = client.post(reverse("tenants:totp-enrol"), {"code": code_for(device.secret)})
    assert done.status_code == 200
    assert done["Cache-Control"] == "no-store"
    codes = re.findall(r"<li><code>([a-z0-9-]{14})</code></li>", done.content.decode())
    assert len(codes) == 10
    assert TotpDevice.objects.get(owner=cast.sub_admin).confirmed_at is not None
    # Stored hashed only.
    stored = set(
        RecoveryCode.objects.filter(owner=cast.sub_admin).values_list("code_hash", flat=True)
    )
    assert len(stored) == 10
    assert not any(code in h or code.replace("-", "") in h for code in codes for h in stored)
    assert AuditRecord.objects.filter(
        action="twofactor.totp_enrolled", object_id=str(cast.sub_admin.pk)
    ).exists()
    # The secret is encrypted at rest: the raw column holds neither it nor its base32.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT secret FROM tenants_totpdevice WHERE owner_id = %s", [cast.sub_admin.pk]
        )
        raw = cursor.fetchone()[0]
    assert device.secret not in raw
    assert base64.b32decode(device.secret).hex() not in raw


def test_login_asks_for_the_code_after_the_password(cast: Cast) -> None:
    secret, _codes = enrol_totp(cast.sub_admin)
    client = Client()
    response = password_login(client, "sub.admin", next="/audit/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("portal:two-factor"))
    assert "next=/audit/" in response["Location"]
    # Nothing else is reachable yet: the customer tree and the API send us back.
    held = client.get(reverse("tenants:customer-list"))
    assert held.status_code == 302 and held["Location"].startswith(reverse("portal:two-factor"))
    assert client.get("/api/v1/customers/").status_code == 401
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert "authenticator app" in page.content.decode()

    passed = challenge(client, code_for(secret), next_path="/audit/")
    assert passed.status_code == 302
    assert passed["Location"] == "/audit/"
    assert is_fully_in(client)
    assert client.get("/api/v1/customers/").status_code == 200
    record = AuditRecord.objects.filter(action="auth.second_factor_passed").latest("seq")
    assert record.actor_id == cast.sub_admin.pk
    assert record.changes["method"] == "totp"


def test_a_code_is_never_accepted_twice(cast: Cast) -> None:
    secret, _codes = enrol_totp(cast.sub_admin)
    code = code_for(secret)
    first = Client()
    password_login(first, "sub.admin")
    assert challenge(first, code).status_code == 302
    # The same code in another login (say, an attacker who watched it typed) is refused.
    second = Client()
    password_login(second, "sub.admin")
    replay = challenge(second, code)
    assert replay.status_code == 200
    assert "already used" in replay.content.decode()
    assert not is_fully_in(second)
    # An older code than the last accepted one is refused too.
    assert challenge(second, code_for(secret, -1)).status_code == 200
    assert AuditRecord.objects.filter(action="auth.second_factor_failed").count() == 2


def test_one_step_of_clock_drift_is_accepted_two_are_not(cast: Cast) -> None:
    secret, _codes = enrol_totp(cast.sub_admin)
    device = TotpDevice.objects.get(owner=cast.sub_admin)
    assert totp.matching_step(secret, code_for(secret, 2)) is None
    assert totp.matching_step(secret, code_for(secret, -2)) is None
    behind = Client()
    password_login(behind, "sub.admin")
    # A phone running one step ahead.
    assert challenge(behind, code_for(secret, +1)).status_code == 302
    device.refresh_from_db()
    assert device.last_used_counter == totp.matching_step(secret, code_for(secret, +1))
    too_far = Client()
    password_login(too_far, "sub.admin")
    assert challenge(too_far, code_for(secret, +2)).status_code == 200


def test_recovery_code_works_once(cast: Cast) -> None:
    _secret, codes = enrol_totp(cast.sub_admin)
    client = Client()
    password_login(client, "sub.admin")
    response = challenge(client, codes[0].upper().replace("-", " "))  # typed sloppily
    assert response.status_code == 302
    assert is_fully_in(client)
    assert RecoveryCode.objects.filter(owner=cast.sub_admin, used_at__isnull=False).count() == 1
    assert AuditRecord.objects.filter(
        action="auth.recovery_code_used", actor_id=cast.sub_admin.pk
    ).exists()
    again = Client()
    password_login(again, "sub.admin")
    assert challenge(again, codes[0]).status_code == 200
    assert not is_fully_in(again)
    assert challenge(again, codes[1]).status_code == 302


@override_settings(TWO_FACTOR_THROTTLE_FAILURES=3, LOGIN_THROTTLE_FAILURES=100)
def test_throttling_holds_across_new_logins(cast: Cast) -> None:
    secret, _codes = enrol_totp(cast.sub_admin)
    for attempt in range(3):
        client = Client()
        password_login(client, "sub.admin", ip=f"203.0.113.{attempt}")
        assert challenge(client, "123456", ip=f"203.0.113.{attempt}").status_code == 200
    # A brand new login, from a new address, with the right code: still refused.
    client = Client()
    assert password_login(client, "sub.admin", ip="203.0.113.99").status_code == 302
    refused = challenge(client, code_for(secret), ip="203.0.113.99")
    assert refused.status_code == 200
    assert "Too many wrong codes" in refused.content.decode()
    assert not is_fully_in(client)
    # The right code was not consumed by the refused attempt.
    device = TotpDevice.objects.get(owner=cast.sub_admin)
    assert device.last_used_counter < totp.matching_step(secret, code_for(secret))
    # Recovery codes are refused as well while locked.
    assert challenge(client, _codes[0], ip="203.0.113.99").status_code == 200
    assert not RecoveryCode.objects.filter(owner=cast.sub_admin, used_at__isnull=False).exists()


def test_removing_the_app_needs_a_fresh_second_factor(cast: Cast) -> None:
    secret, _codes = enrol_totp(cast.sub_admin)
    client = Client()
    password_login(client, "sub.admin")
    challenge(client, code_for(secret))
    session = client.session
    session["_ums_2fa"]["at"] -= 3600  # the check happened an hour ago
    session.save()
    response = client.post(reverse("tenants:totp-remove"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("portal:two-factor"))
    assert TotpDevice.objects.filter(owner=cast.sub_admin).exists()
    challenge(client, code_for(secret, +1))
    assert client.post(reverse("tenants:totp-remove")).status_code == 302
    assert not TotpDevice.objects.filter(owner=cast.sub_admin).exists()
    assert not RecoveryCode.objects.filter(owner=cast.sub_admin).exists()
    assert AuditRecord.objects.filter(action="twofactor.totp_removed").exists()
