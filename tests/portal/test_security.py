"""The portal's security baseline: CSP without inline code, login, next=, CSRF, languages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from tests.fixtures import PASSWORD, Cast

pytestmark = pytest.mark.django_db

TEMPLATES = Path(settings.BASE_DIR) / "templates"


def test_csp_forbids_inline_code_on_portal_pages(cast: Cast, client: Client, login: Any) -> None:
    for response in (
        client.get(reverse("portal:login")),
        login(cast.sub_admin).get(reverse("tenants:customer-list")),
        client.get(reverse("audit:record-list")),
    ):
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "frame-ancestors 'none'" in policy
        assert response["X-Frame-Options"] == "DENY"


def test_templates_contain_no_inline_scripts_styles_or_safe_filters() -> None:
    templates = [
        *TEMPLATES.rglob("*.html"),
        *Path(settings.BASE_DIR).glob("*/templates/**/*.html"),
    ]
    assert len(templates) > 20
    for path in templates:
        text = path.read_text()
        assert "style=" not in text, path
        assert "<style" not in text, path
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert not re.search(r"\son[a-z]+=", text), path  # onclick= and friends
        assert "|safe" not in text and "autoescape off" not in text, path


def test_rendered_pages_have_no_inline_code(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    for url in (
        reverse("tenants:customer-detail", args=[cast.ministry.pk]),
        reverse("tenants:administrator-create"),
        reverse("tenants:settings"),
        reverse("audit:record-list"),
    ):
        html = client.get(url).content.decode()
        assert " style=" not in html
        assert not re.search(r"<script(?![^>]*\bsrc=)", html)
        for src in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert not src.startswith(("http:", "https:", "//")), src


def test_login_and_logout(cast: Cast, client: Client) -> None:
    response = client.get(reverse("tenants:customer-list"))
    assert response.status_code == 302
    login_page = client.get(response["Location"])
    assert 'name="next" value="/customers/"' in login_page.content.decode()
    response = client.post(
        reverse("portal:login"),
        {"username": cast.sub_admin.username, "password": PASSWORD, "next": "/customers/"},
    )
    assert response.status_code == 302 and response["Location"] == "/customers/"
    assert client.get("/customers/").status_code == 200
    response = client.post(reverse("portal:logout"))
    assert response.status_code == 302
    assert client.get("/customers/").status_code == 302


def test_wrong_password_shows_an_error(cast: Cast, client: Client) -> None:
    response = client.post(
        reverse("portal:login"), {"username": cast.sub_admin.username, "password": "nope"}
    )
    assert response.status_code == 200
    assert "Please enter a correct" in response.content.decode()


def test_throttling_message_is_shown(cast: Cast, client: Client) -> None:
    for _ in range(settings.LOGIN_THROTTLE_FAILURES):
        client.post(reverse("portal:login"), {"username": "sub.admin", "password": "wrong"})
    response = client.post(reverse("portal:login"), {"username": "sub.admin", "password": PASSWORD})
    assert response.status_code == 200
    assert "Too many failed logins" in response.content.decode()
    assert client.get("/customers/").status_code == 302


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "http:/evil.example",
        "javascript:alert(1)",
    ],
)
def test_next_only_goes_to_local_paths(cast: Cast, client: Client, target: str) -> None:
    page = client.get(reverse("portal:login"), {"next": target})
    assert '<input type="hidden" name="next" value="">' in page.content.decode()
    response = client.post(
        reverse("portal:login") + "?next=" + target,
        {"username": cast.sub_admin.username, "password": PASSWORD, "next": target},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:home")


def test_csrf_is_enforced(cast: Cast) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(cast.sub_admin)
    response = client.post(
        reverse("tenants:customer-create", args=[cast.ministry.pk]), {"name": "No token"}
    )
    assert response.status_code == 403
    assert not cast.ministry.children.filter(name="No token").exists()


def test_session_cookie_flags(cast: Cast, client: Client) -> None:
    response = client.post(
        reverse("portal:login"), {"username": cast.sub_admin.username, "password": PASSWORD}
    )
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"


@pytest.mark.parametrize(
    ("language", "words"),
    [("ru", ["Клиенты", "Дерево клиентов", "Выйти"]), ("mn", ["Харилцагчид", "Гарах"])],
)
def test_language_switch(cast: Cast, login: Any, language: str, words: list[str]) -> None:
    client = login(cast.sub_admin)
    response = client.post(reverse("set_language"), {"language": language, "next": "/customers/"})
    assert response.status_code == 302 and response["Location"] == "/customers/"
    html = client.get("/customers/").content.decode()
    assert f'<html lang="{language}">' in html
    for word in words:
        assert word in html


def test_language_switch_ignores_foreign_next(cast: Cast, login: Any) -> None:
    response = login(cast.sub_admin).post(
        reverse("set_language"), {"language": "ru", "next": "https://evil.example/"}
    )
    assert "evil.example" not in response.get("Location", "")


def test_russian_plural_forms(cast: Cast, login: Any) -> None:
    from tenants import actions

    client = login(cast.sub_admin)
    client.cookies["django_language"] = "ru"
    expected = {1: "1 дочерний клиент", 2: "2 дочерних клиента", 5: "5 дочерних клиентов"}
    made = 1  # Government already has Ministry
    for count, text in expected.items():
        while made < count:
            actions.create_customer(actor=None, name=f"Отдел {made}", parent=cast.government)
            made += 1
        assert text in client.get("/customers/").content.decode()


def test_error_pages_are_portal_pages(cast: Cast, client: Client, login: Any) -> None:
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "Page not found" in response.content.decode()
    forbidden = login(cast.ministry_viewer).get(reverse("tenants:administrator-create"))
    assert forbidden.status_code == 403
    assert "You are not allowed to do this" in forbidden.content.decode()
