"""Sessions: key rotation at login and after the second factor, idle and absolute timeouts,
the list of one's sessions and "sign out everywhere else"."""

from __future__ import annotations

import datetime

import pytest
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditRecord
from tenants.models_identity import SessionRecord
from tests.fixtures import Cast
from tests.identity.conftest import (
    challenge,
    code_for,
    enrol_totp,
    is_fully_in,
    password_login,
)

pytestmark = pytest.mark.django_db


def session_key(client: Client) -> str:
    return client.cookies["sessionid"].value


def test_session_key_rotates_at_login_and_again_after_the_second_factor(cast: Cast) -> None:
    secret, _codes = enrol_totp(cast.sub_admin)
    client = Client()
    client.get(reverse("portal:login"))
    client.session.save()
    anonymous = client.cookies.get("sessionid")
    password_login(client, "sub.admin")
    after_password = session_key(client)
    assert anonymous is None or anonymous.value != after_password
    challenge(client, code_for(secret))
    after_factor = session_key(client)
    assert after_factor != after_password
    # The key seen before the second factor is worthless now.
    stale = Client()
    stale.cookies["sessionid"] = after_password
    assert stale.get(reverse("tenants:settings")).status_code == 302
    assert is_fully_in(client)
    # One session record, kept across both rotations.
    assert SessionRecord.objects.filter(owner=cast.sub_admin).count() == 1


@override_settings(SESSION_IDLE_TIMEOUT=600)
def test_idle_session_ends(cast: Cast) -> None:
    client = Client()
    password_login(client, "sub.admin")
    assert is_fully_in(client)
    SessionRecord.objects.filter(owner=cast.sub_admin).update(
        last_seen_at=timezone.now() - datetime.timedelta(seconds=601)
    )
    response = client.get(reverse("tenants:settings"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("portal:login"))
    record = SessionRecord.objects.get(owner=cast.sub_admin)
    assert record.ended_reason == "idle" and record.revoked_at is not None
    assert AuditRecord.objects.filter(
        action="auth.session_expired", actor_id=cast.sub_admin.pk
    ).exists()
    # Activity keeps a session alive: last seen moves (at most once a minute).
    other = Client()
    password_login(other, "sub.admin")
    SessionRecord.objects.filter(owner=cast.sub_admin, revoked_at__isnull=True).update(
        last_seen_at=timezone.now() - datetime.timedelta(seconds=500)
    )
    assert is_fully_in(other)
    fresh = SessionRecord.objects.get(owner=cast.sub_admin, revoked_at__isnull=True)
    assert timezone.now() - fresh.last_seen_at < datetime.timedelta(seconds=5)


@override_settings(SESSION_ABSOLUTE_TIMEOUT=3600)
def test_absolute_timeout_ends_even_an_active_session(cast: Cast) -> None:
    client = Client()
    password_login(client, "sub.admin")
    session = client.session
    session["_ums_login_at"] -= 3601
    session.save()
    response = client.get(reverse("tenants:settings"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("portal:login"))
    assert SessionRecord.objects.get(owner=cast.sub_admin).ended_reason == "absolute"


def test_sessions_are_listed_and_can_be_signed_out_everywhere_else(cast: Cast) -> None:
    laptop, phone, tablet = Client(), Client(), Client()
    laptop.defaults["HTTP_USER_AGENT"] = "Laptop Browser"
    phone.defaults["HTTP_USER_AGENT"] = "Phone Browser"
    password_login(laptop, "sub.admin")
    password_login(phone, "sub.admin")
    password_login(tablet, "sub.admin")
    password_login(Client(), "ministry.viewer")  # someone else's session is never listed
    page = laptop.get(reverse("tenants:sessions"))
    rows = page.context["rows"]
    assert len(rows) == 3
    assert sum(1 for _record, current in rows if current) == 1
    html = page.content.decode()
    assert "Phone Browser" in html and "Laptop Browser" in html
    assert "198.51.100.20" in html
    # Sign out one session.
    phone_record = SessionRecord.objects.get(owner=cast.sub_admin, user_agent="Phone Browser")
    laptop.post(reverse("tenants:session-revoke", args=[phone_record.pk]))
    assert phone.get(reverse("tenants:settings")).status_code == 302
    assert is_fully_in(tablet)
    # Then everywhere else.
    response = laptop.post(reverse("tenants:sessions-revoke-others"))
    assert response.status_code == 302
    assert tablet.get(reverse("tenants:settings")).status_code == 302
    assert is_fully_in(laptop)
    assert SessionRecord.objects.filter(owner=cast.sub_admin, revoked_at__isnull=True).count() == 1
    assert AuditRecord.objects.filter(action="auth.session_revoked").count() == 2
    # Another administrator's session cannot be revoked by guessing its id.
    theirs = SessionRecord.objects.get(owner=cast.ministry_viewer)
    assert laptop.post(reverse("tenants:session-revoke", args=[theirs.pk])).status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_logout_ends_the_record(cast: Cast) -> None:
    client = Client()
    password_login(client, "sub.admin")
    client.post(reverse("portal:logout"))
    assert SessionRecord.objects.get(owner=cast.sub_admin).ended_reason == "logout"


def test_session_api_lists_own_sessions_and_revokes(cast: Cast) -> None:
    first, second = Client(), Client()
    password_login(first, "sub.admin")
    password_login(second, "sub.admin")
    body = first.get("/api/v1/sessions/").json()
    assert len(body["results"]) == 2
    assert sum(1 for row in body["results"] if row["current"]) == 1
    answer = first.post("/api/v1/sessions/revoke-others/")
    assert answer.status_code == 200 and answer.json() == {"revoked": 1}
    assert second.get("/api/v1/sessions/").status_code in (401, 403)
    assert first.get("/api/v1/sessions/").status_code == 200
