"""The licence page, the banner and the API: terms, use against the limit, days left, and
the warnings at 30 days and at 90 % of the limit. Operators only."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from unittest import mock

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditRecord
from licensing import actions
from licensing.models import InstalledLicence
from tests.fixtures import Cast, token_client
from tests.licensing.conftest import make_licence
from tests.licensing.test_document import _altered
from tests.mail.helpers import make_domain, make_mailbox
from tests.portal.conftest import form_errors

pytestmark = pytest.mark.django_db


def _mailboxes(cast: Cast, count: int) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    for n in range(count):
        make_mailbox(domain, f"user{n}")


def test_the_page_shows_terms_use_and_days_left(cast: Cast, login: Callable[..., Client]) -> None:
    _mailboxes(cast, 3)
    actions.install_licence(actor=cast.root_admin, text=make_licence(limit=10, days=200))
    client = login(cast.root_admin)
    page = client.get(reverse("licensing:licence")).content.decode()
    assert "Example ISP" in page and "LIC-TEST-1" in page
    assert "3 of 10" in page and "30%" in page
    assert ">200<" in page  # days left
    assert "days left." not in page  # no warning yet
    settings_page = client.get(reverse("tenants:settings")).content.decode()
    assert reverse("licensing:licence") in settings_page


def test_warnings_at_30_days_and_at_90_percent(cast: Cast, login: Callable[..., Client]) -> None:
    _mailboxes(cast, 9)
    actions.install_licence(actor=cast.root_admin, text=make_licence(limit=10, days=365))
    client = login(cast.root_admin)
    home = client.get(reverse("portal:home")).content.decode()
    assert "90% of the licence is in use: 9 of 10 users (mailboxes)." in home
    assert "9 / 10" in home and "Licence: users (mailboxes), 365 days left" in home  # tile
    assert "days left." not in home
    # 30 days before expiry: a licence issued 336 days ago (365 days long) has 29 left.
    issued = timezone.now().date() - datetime.timedelta(days=336)
    actions.install_licence(
        actor=cast.root_admin, text=make_licence(limit=10, days=365, issued=issued)
    )
    home = client.get(reverse("portal:home")).content.decode()
    assert "The licence expires on" in home and ": 29 days left." in home
    body = token_client(cast.root_admin).get(reverse("licence")).json()
    assert body["daysLeft"] == 29 and body["percent"] == 90
    assert [w["level"] for w in body["warnings"]] == ["warning", "warning"]
    # The first licence, with the clock moved 336 days on, says the same (API: no session).
    actions.install_licence(actor=cast.root_admin, text=make_licence(limit=10, days=365))
    api = token_client(cast.root_admin)
    with mock.patch(
        "django.utils.timezone.now", return_value=timezone.now() + datetime.timedelta(days=336)
    ):
        assert api.get(reverse("licence")).json()["daysLeft"] == 29
    # Tenants' administrators are not bothered with the installation's licence.
    client.force_login(cast.sub_admin)
    assert "licence" not in client.get(reverse("portal:home")).content.decode().lower()
    assert "Licence:" not in client.get(reverse("portal:home")).content.decode()


def test_unlicensed_and_exhausted_banners(cast: Cast, login: Callable[..., Client]) -> None:
    client = login(cast.root_admin)
    assert "runs unlicensed" in client.get(reverse("portal:home")).content.decode()
    _mailboxes(cast, 2)
    actions.install_licence(actor=cast.root_admin, text=make_licence(limit=2))
    page = client.get(reverse("portal:home")).content.decode()
    assert "The licence limit is reached: 2 of 2 users (mailboxes) in use" in page


def test_portal_upload_installs_and_refuses_with_a_field_error(
    cast: Cast, login: Callable[..., Client]
) -> None:
    client = login(cast.root_admin)
    url = reverse("licensing:licence")
    bad = _altered(make_licence(limit=5), limit=500)
    response = client.post(url, {"text": bad})
    assert response.status_code == 200
    assert "altered after it was signed" in " ".join(form_errors(response)["text"])
    assert not InstalledLicence.objects.exists()
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("isp.licence", make_licence(limit=5).encode())
    response = client.post(url, {"file": upload})
    assert response.status_code == 302
    assert InstalledLicence.objects.get().licence_id == "LIC-TEST-1"
    assert "Licence LIC-TEST-1 for Example ISP is installed." in client.get(url).content.decode()
    assert AuditRecord.objects.filter(action="licence.install").count() == 1
    history = client.get(reverse("audit:record-list")).content.decode()
    assert "Licence installed" in history


def test_only_operators_see_the_page(cast: Cast, login: Callable[..., Client]) -> None:
    client = login(cast.sub_admin)
    assert client.get(reverse("licensing:licence")).status_code == 403
    assert client.post(reverse("licensing:licence"), {"text": make_licence()}).status_code == 403
    assert not InstalledLicence.objects.exists()


def test_api_get_and_put(cast: Cast) -> None:
    client = token_client(cast.root_admin)
    url = reverse("licence")
    assert client.get(url).json()["state"] == "unlicensed"
    response = client.put(url, {"text": _altered(make_licence(), limit=9)}, format="json")
    assert response.status_code == 400
    assert "altered" in " ".join(response.json()["errors"]["text"])
    response = client.put(url, {"text": make_licence(model="storage_gb", limit=50)}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["state"] == "valid" and body["licence"]["model"] == "storage_gb"
    assert body["licence"]["limit"] == 50 and body["daysLeft"] == 365
    assert client.put(url, {"text": "x", "valid": True}, format="json").status_code == 400
    outsider = token_client(cast.sub_admin)
    assert outsider.get(url).status_code == 403
    assert outsider.put(url, {"text": make_licence()}, format="json").status_code == 403
    assert InstalledLicence.objects.count() == 1
