"""The filters page lists a mailbox's Sieve scripts with an Activate/Deactivate button."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from mail import actions
from mail.models import SieveScript
from tests.fixtures import Cast
from tests.mail.helpers import make_domain, make_mailbox
from tests.portal.conftest import login  # noqa: F401

pytestmark = pytest.mark.django_db


def test_filters_page_switches_the_active_script(
    cast: Cast,
    login: Callable[..., Client],  # noqa: F811
) -> None:
    mailbox = make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")
    first = actions.create_sieve_script(
        actor=None, mailbox=mailbox, name="first", mode="raw", script="keep;"
    )
    second = actions.create_sieve_script(
        actor=None, mailbox=mailbox, name="second", mode="raw", script="keep;", is_active=False
    )
    client = login(cast.sub_admin)
    page = client.get(reverse("mail:mailbox-filters", args=[mailbox.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert reverse("mail:filter-activate", args=[second.pk]) in html
    assert reverse("mail:filter-deactivate", args=[first.pk]) in html

    response = client.post(reverse("mail:filter-activate", args=[second.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("mail:mailbox-filters", args=[mailbox.pk])
    active = SieveScript.objects.filter(mailbox=mailbox, is_active=True)
    assert list(active.values_list("name", flat=True)) == ["second"]
    page = client.get(response["Location"])
    assert "Filter “second” is now active." in page.content.decode()

    client.post(reverse("mail:filter-deactivate", args=[second.pk]))
    assert not SieveScript.objects.filter(mailbox=mailbox, is_active=True).exists()

    # A viewer sees the page without buttons and may not switch; outside the scope: 404.
    viewer = login(cast.ministry_viewer)
    html = viewer.get(reverse("mail:mailbox-filters", args=[mailbox.pk])).content.decode()
    assert reverse("mail:filter-activate", args=[first.pk]) not in html
    assert viewer.post(reverse("mail:filter-activate", args=[first.pk])).status_code == 403
    sibling = login(cast.sibling_admin)
    assert sibling.post(reverse("mail:filter-activate", args=[first.pk])).status_code == 404
    assert not SieveScript.objects.filter(mailbox=mailbox, is_active=True).exists()
