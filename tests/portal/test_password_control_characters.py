"""Control characters in an administrator's password are refused at every entry point.

The rule is one validator in AUTH_PASSWORD_VALIDATORS (tenants/password_validators.py);
these tests go through each door: ``createadmin``, the portal's create, set-password and
own-password forms, and the API's create and set-password.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from tenants import permissions as perms
from tenants.models import Administrator
from tests.fixtures import PASSWORD, Cast, token_client
from tests.portal.conftest import form_errors

pytestmark = pytest.mark.django_db

BASE = "Orchard-Signal-Pebble-31"
BAD = [BASE + "\t", BASE + "\n", "\x1b[31m" + BASE, BASE + "\x7f", BASE + "\x85", BASE + "\u2028"]
MESSAGE = "must not contain control characters"


@pytest.mark.parametrize("password", BAD)
def test_createadmin_refuses(password: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UMS_ADMIN_PASSWORD", password)
    with pytest.raises(CommandError, match=MESSAGE):
        call_command(
            "createadmin", "--customer", "Op", "--username", "ctl.admin",
            "--email", "ops@example.org", "--no-input",
        )  # fmt: skip
    assert not Administrator.objects.filter(username="ctl.admin").exists()


def test_portal_forms_refuse(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    bad = BAD[0]
    created = client.post(
        reverse("tenants:administrator-create"),
        {
            "username": "ctl.person",
            "full_name": "Ctl Person",
            "email": "ctl@example.org",
            "customer": cast.ministry.pk,
            "password": bad,
            "password_confirm": bad,
            "is_active": "on",
        },
    )
    assert MESSAGE in " ".join(form_errors(created)["password"])
    assert not Administrator.objects.filter(username="ctl.person").exists()
    target = cast.ministry_viewer
    reset = client.post(
        reverse("tenants:administrator-password", args=[target.pk]),
        {"password": bad, "password_confirm": bad},
    )
    assert MESSAGE in " ".join(form_errors(reset)["password"])
    own = client.post(
        reverse("tenants:password-change"),
        {"current_password": PASSWORD, "password": bad, "password_confirm": bad},
    )
    assert MESSAGE in " ".join(form_errors(own)["password"])
    target.refresh_from_db()
    cast.sub_admin.refresh_from_db()
    assert target.check_password(PASSWORD) and cast.sub_admin.check_password(PASSWORD)
    # A clean password of the same shape is accepted: the rule is the characters.
    ok = client.post(
        reverse("tenants:administrator-password", args=[target.pk]),
        {"password": BASE, "password_confirm": BASE},
    )
    assert ok.status_code == 302


@pytest.mark.parametrize("password", BAD)
def test_api_refuses(cast: Cast, password: str) -> None:
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("administrator-list"),
        {
            "username": "ctl.api",
            "fullName": "Ctl Api",
            "email": "ctl.api@example.org",
            "customer": cast.ministry.pk,
            "permissions": [perms.MAIL_VIEW],
            "password": password,
        },
        format="json",
    )
    assert response.status_code == 400, response.content
    assert MESSAGE in " ".join(response.json()["errors"]["password"])
    url = reverse("administrator-set-password", args=[cast.ministry_viewer.pk])
    response = client.post(url, {"password": password}, format="json")
    assert response.status_code == 400, response.content
    assert MESSAGE in " ".join(response.json()["errors"]["password"])
    cast.ministry_viewer.refresh_from_db()
    assert cast.ministry_viewer.check_password(PASSWORD)
