"""Password reset by mail: the link from UMS_BASE_URL, single use, expiring, throttled,
audited, refused for accounts whose password is not local, and silent about accounts.

Mail goes to Django's locmem outbox (pytest-django's ``mailoutbox``), i.e. Django's own
mail machinery with the message kept instead of handed to an SMTP server.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditRecord
from tenants.models import Administrator, LoginFailure
from tests.fixtures import PASSWORD, Cast

pytestmark = pytest.mark.django_db(transaction=True)  # the mail leaves after commit

NEW = "Meadow-Lantern-Quartz-74"


def ask(client: Client, username: str, ip: str = "198.51.100.7") -> Any:
    return client.post(reverse("portal:password-reset"), {"username": username}, REMOTE_ADDR=ip)


def link_in(mail: Any) -> str:
    [url] = re.findall(r"https?://\S+", mail.body)
    return url


def test_reset_by_mail_end_to_end(cast: Cast, client: Client, mailoutbox: list, settings) -> None:
    settings.BASE_URL = "https://ums.example.org"
    admin = cast.sub_admin
    response = ask(client, admin.username.upper())  # usernames are case-insensitive
    assert response.status_code == 200
    assert "a mail with a link is on its way" in response.content.decode()
    [mail] = mailoutbox
    assert mail.to == [admin.email]
    url = link_in(mail)
    assert url.startswith("https://ums.example.org/login/reset/")
    path = url.removeprefix("https://ums.example.org")
    assert client.get(path).status_code == 200
    mismatch = client.post(path, {"password": NEW, "password_confirm": NEW + "x"})
    assert mismatch.status_code == 200
    weak = client.post(path, {"password": "password", "password_confirm": "password"})
    assert "too common" in weak.content.decode()
    done = client.post(path, {"password": NEW, "password_confirm": NEW})
    assert done.status_code == 302 and done["Location"] == reverse("portal:login")
    admin.refresh_from_db()
    assert admin.check_password(NEW)
    actions = list(
        AuditRecord.objects.filter(object_id=str(admin.pk), action__startswith="administrator.")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions[-2:] == [
        "administrator.password_reset_requested",
        "administrator.password_reset",
    ]
    # Single use: the same link no longer works.
    again = client.post(path, {"password": PASSWORD, "password_confirm": PASSWORD})
    assert again.status_code == 400 and "not valid" in again.content.decode()
    admin.refresh_from_db()
    assert admin.check_password(NEW)


def test_unknown_and_refused_accounts_get_the_same_answer_and_no_mail(
    cast: Cast, client: Client, mailoutbox: list
) -> None:
    known = ask(client, cast.sub_admin.username, ip="198.51.100.8").content.decode()
    mailoutbox.clear()
    unknown = ask(client, "nobody.here", ip="198.51.100.8").content.decode()
    sso = cast.ministry_viewer
    sso.set_unusable_password()  # how SSO and directory logins are provisioned
    sso.save()
    refused = ask(client, sso.username, ip="198.51.100.8").content.decode()
    inactive = cast.sibling_admin
    Administrator.objects.filter(pk=inactive.pk).update(is_active=False)
    ask(client, inactive.username, ip="198.51.100.8")
    assert mailoutbox == []

    def body(html: str) -> str:
        return html.split('id="reset-title"')[1]

    assert body(known) == body(unknown) == body(refused)
    reasons = dict(
        AuditRecord.objects.filter(action="administrator.password_reset_refused").values_list(
            "object_id", "changes__reason"
        )
    )
    assert reasons == {str(sso.pk): "external_login", str(inactive.pk): "inactive"}


def test_expired_and_forged_links_are_refused(
    cast: Cast, client: Client, mailoutbox: list, settings
) -> None:
    ask(client, cast.sub_admin.username)
    path = "/" + link_in(mailoutbox[0]).split("/", 3)[3]
    uid = path.split("/")[3]
    for bad in (
        f"/login/reset/{uid}/forged-token/",
        "/login/reset/!!/x/",
        "/login/reset/OTk5OTk5/x/",
    ):
        assert client.get(bad).status_code == 400
        assert client.post(bad, {"password": NEW, "password_confirm": NEW}).status_code == 400
    settings.PASSWORD_RESET_TIMEOUT = -1  # every link is past its lifetime
    assert client.get(path).status_code == 400
    cast.sub_admin.refresh_from_db()
    assert cast.sub_admin.check_password(PASSWORD)


def test_requests_are_throttled_per_account_and_per_address(
    cast: Cast, client: Client, mailoutbox: list, settings
) -> None:
    settings.PASSWORD_RESET_PER_ACCOUNT = 2
    settings.PASSWORD_RESET_PER_ADDRESS = 3
    name = cast.sub_admin.username
    assert ask(client, name, ip="203.0.113.1").status_code == 200
    assert ask(client, name, ip="203.0.113.2").status_code == 200
    third = ask(client, name, ip="203.0.113.3")
    assert third.status_code == 429 and "Too many reset requests" in third.content.decode()
    assert len(mailoutbox) == 2
    # Per address, whatever the usernames (unknown ones count too: nothing is revealed).
    for n in range(3):
        assert ask(client, f"someone{n}", ip="203.0.113.9").status_code == 200
    assert ask(client, "someone9", ip="203.0.113.9").status_code == 429
    assert LoginFailure.objects.filter(kind="reset").count() >= 5
    # The login page links the reset.
    assert reverse("portal:password-reset") in client.get(reverse("portal:login")).content.decode()
