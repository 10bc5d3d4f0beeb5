"""Portal pages for enrolment tokens: list in scope, create (secret shown once), revoke."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from audit.models import AuditRecord
from servers import actions as server_actions
from servers import enrolment
from servers.models import EnrolmentToken, Zone
from tests.fixtures import Cast
from ums import context

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_action_context() -> Any:
    # force_login sets the acting administrator outside any request; start each test clean.
    with context.acting(channel=context.CHANNEL_SYSTEM):
        yield


def login(client: Client, admin: Any) -> Client:
    client.force_login(admin)
    client.cookies["django_language"] = "en"
    return client


def test_list_shows_tokens_in_scope_only(client: Client, cast: Cast, zone: Zone) -> None:
    isp_zone = server_actions.create_zone(actor=None, customer=cast.isp, name="ISP DC")
    enrolment.create_enrolment_token(actor=None, zone=zone, name="government rack")
    enrolment.create_enrolment_token(actor=None, zone=isp_zone, name="isp rack")
    page = login(client, cast.sub_admin).get(reverse("enrolment:token-list"))
    assert page.status_code == 200
    text = page.content.decode()
    assert "government rack" in text
    assert "isp rack" not in text


@override_settings(BASE_URL="https://portal.example.net")
def test_create_shows_the_token_once_with_the_command(
    client: Client, cast: Cast, zone: Zone
) -> None:
    browser = login(client, cast.sub_admin)
    form = browser.get(reverse("enrolment:token-create") + f"?zone={zone.pk}")
    assert form.status_code == 200
    response = browser.post(
        reverse("enrolment:token-create"),
        {"zone": zone.pk, "name": "rack 7", "max_uses": 3, "expires_in_hours": 48},
    )
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    text = response.content.decode()
    secret = re.search(r"umsnode_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", text).group(0)
    assert (
        "cd /tmp &amp;&amp; wget https://portal.example.net/install/bootstrapcore.sh "
        f"&amp;&amp; sh bootstrapcore.sh {secret}"
    ) in text
    token = EnrolmentToken.objects.get()
    assert (token.name, token.max_uses, token.zone_id) == ("rack 7", 3, zone.pk)
    assert AuditRecord.objects.get(action="enrolment_token.create").channel == "portal"
    listing = browser.get(reverse("enrolment:token-list")).content.decode()
    assert "rack 7" in listing
    assert secret not in listing
    # Strict CSP: the pages carry no inline script or style.
    for page in (text, listing):
        assert "<script>" not in page and "style=" not in page and "<style" not in page


def test_zone_out_of_scope_is_not_offered_nor_accepted(
    client: Client, cast: Cast, zone: Zone
) -> None:
    isp_zone = server_actions.create_zone(actor=None, customer=cast.isp, name="ISP DC")
    browser = login(client, cast.sub_admin)
    assert "ISP DC" not in browser.get(reverse("enrolment:token-create")).content.decode()
    response = browser.post(
        reverse("enrolment:token-create"),
        {"zone": isp_zone.pk, "name": "sneaky", "max_uses": 1, "expires_in_hours": 1},
    )
    assert response.status_code == 200
    assert "zone" in response.context["form"].errors
    assert not EnrolmentToken.objects.exists()


def test_revoke_in_scope_and_404_outside(client: Client, cast: Cast, zone: Zone) -> None:
    token = enrolment.create_enrolment_token(actor=None, zone=zone, name="rack")[0]
    outsider = login(Client(), cast.sibling_admin)
    url = reverse("enrolment:token-revoke", args=[token.pk])
    assert outsider.post(url).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None
    response = login(client, cast.sub_admin).post(url)
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert client.get(url).status_code == 405  # revoking is a POST, never a link


def test_viewer_sees_the_list_but_cannot_create(client: Client, cast: Cast, zone: Zone) -> None:
    browser = login(client, cast.ministry_viewer)
    assert browser.get(reverse("enrolment:token-list")).status_code == 200
    assert browser.get(reverse("enrolment:token-create")).status_code == 403
