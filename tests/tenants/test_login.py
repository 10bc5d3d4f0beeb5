"""Portal login: audit of every attempt, throttling that survives, session rotation."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from audit.models import AuditRecord
from tenants.models import LoginFailure
from tests.fixtures import PASSWORD, Cast

pytestmark = pytest.mark.django_db


def login(client: Client, username: str, password: str, ip: str = "198.51.100.7"):
    return client.post(
        reverse("portal:login"), {"username": username, "password": password}, REMOTE_ADDR=ip
    )


def test_login_and_logout_are_audited_and_session_rotates(cast: Cast) -> None:
    client = Client()
    client.get(reverse("portal:login"))
    client.session.save()
    before = client.cookies.get("sessionid").value if client.cookies.get("sessionid") else None
    response = login(client, "sub.admin", PASSWORD)
    assert response.status_code == 302
    assert client.cookies["sessionid"].value != before
    record = AuditRecord.objects.filter(action="auth.login").latest("seq")
    assert record.actor_id == cast.sub_admin.pk
    assert record.source_ip == "198.51.100.7"
    assert record.channel == "portal"
    client.post(reverse("portal:logout"))
    assert AuditRecord.objects.filter(action="auth.logout", actor_id=cast.sub_admin.pk).exists()


def test_failed_login_is_audited(cast: Cast) -> None:
    response = login(Client(), "sub.admin", "wrong password")
    assert response.status_code == 200
    record = AuditRecord.objects.filter(action="auth.login_failed").latest("seq")
    assert record.object_id == str(cast.sub_admin.pk)
    assert record.customer_id == cast.government.pk


@override_settings(LOGIN_THROTTLE_FAILURES=3, LOGIN_THROTTLE_IP_FAILURES=100)
def test_account_throttle_holds_across_new_sessions_and_addresses(cast: Cast) -> None:
    for i in range(3):
        login(Client(), "sub.admin", "wrong", ip=f"203.0.113.{i}")
    # A fresh client from a fresh address with the right password is still refused.
    response = login(Client(), "sub.admin", PASSWORD, ip="203.0.113.99")
    assert response.status_code == 200
    assert "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in Client().session


@override_settings(LOGIN_THROTTLE_FAILURES=100, LOGIN_THROTTLE_IP_FAILURES=3)
def test_ip_throttle_not_reset_by_a_successful_login(cast: Cast) -> None:
    ip = "192.0.2.55"
    for name in ("a", "b", "c"):
        login(Client(), f"guess.{name}", "wrong", ip=ip)
    response = login(Client(), "sub.admin", PASSWORD, ip=ip)
    assert "Too many failed logins" in response.content.decode()
    # Failures are rows in the database: nothing a client sends clears them.
    assert LoginFailure.objects.filter(kind="ip", key=ip).count() >= 3


def test_next_only_to_local_paths(cast: Cast) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        response = Client().post(
            reverse("portal:login") + f"?next={target}",
            {"username": "sub.admin", "password": PASSWORD, "next": target},
        )
        assert response.status_code == 302
        assert "evil.example" not in response["Location"]
    response = Client().post(
        reverse("portal:login"),
        {"username": "sub.admin", "password": PASSWORD, "next": "/audit/"},
    )
    assert response["Location"] == "/audit/"


def test_disabled_administrator_cannot_log_in(cast: Cast) -> None:
    from tenants import actions

    actions.update_administrator(actor=cast.sub_admin, admin=cast.ministry_viewer, is_active=False)
    response = login(Client(), "ministry.viewer", PASSWORD)
    assert response.status_code == 200


def test_security_headers(cast: Cast) -> None:
    response = Client().get(reverse("portal:login"))
    csp = response["Content-Security-Policy"]
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
