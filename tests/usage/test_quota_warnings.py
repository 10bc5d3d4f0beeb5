"""Quota warnings: one warning and one mail per threshold crossing, shown in the portal to
the customer's administrators while it holds, none for a steady mailbox."""

from __future__ import annotations

import pytest
from django.core import mail as outbox
from django.test import Client
from django.urls import reverse

from tests.fixtures import make_admin
from tests.mail.helpers import make_domain, make_mailbox
from usage import collect, quota_warnings
from usage.models import MailboxUsage, QuotaWarning

pytestmark = pytest.mark.django_db
MB = 1024 * 1024


@pytest.fixture
def box(cast):
    return make_mailbox(make_domain(cast.ministry, "quota.example"), "ann", quota_mb=100)


def test_crossing_80_then_95_warns_once_each_and_mails_the_nearest_administrators(
    cast, box
) -> None:
    ministry_admin = make_admin(cast.ministry, "ministry.mail", ["mail.view"])
    make_admin(cast.ministry, "ministry.noperm", [])
    collect.record({box.pk: (50 * MB, 10)})
    assert not QuotaWarning.objects.exists()
    collect.record({box.pk: (81 * MB, 20)})
    collect.record({box.pk: (82 * MB, 21)})  # still over 80: nothing new
    assert list(QuotaWarning.objects.values_list("percent", flat=True)) == [80]
    assert quota_warnings.send_pending() == 1
    assert quota_warnings.send_pending() == 0
    # Ministry's administrators with mail rights (the cast's viewer too), not the one without.
    assert sorted(m.to[0] for m in outbox.outbox) == sorted(
        [ministry_admin.email, cast.ministry_viewer.email]
    )
    assert "ann@quota.example" in outbox.outbox[0].subject
    collect.record({box.pk: (96 * MB, 30)})
    assert QuotaWarning.objects.filter(is_open=True).get().percent == 95
    quota_warnings.send_pending()
    assert len(outbox.outbox) == 4
    assert MailboxUsage.objects.get(pk=box.pk).warned_percent == 95


def test_a_mailbox_back_under_the_threshold_is_warned_again_on_the_next_crossing(box) -> None:
    collect.record({box.pk: (90 * MB, 1)})
    collect.record({box.pk: (10 * MB, 1)})
    assert not QuotaWarning.objects.filter(is_open=True).exists()
    assert MailboxUsage.objects.get(pk=box.pk).warned_percent == 0
    collect.record({box.pk: (85 * MB, 1)})
    assert QuotaWarning.objects.filter(percent=80).count() == 2


def test_no_administrator_at_the_customer_means_the_nearest_ancestors_are_mailed(cast) -> None:
    # Department has no administrator of its own; Ministry's viewer may see mail.
    box = make_mailbox(make_domain(cast.department, "dept.example"), "bob", quota_mb=10)
    collect.record({box.pk: (int(9.9 * MB), 1)})
    assert quota_warnings.send_pending() == 1
    assert [m.to for m in outbox.outbox] == [[cast.ministry_viewer.email]]


def test_portal_shows_the_warning_in_scope_only(cast, box) -> None:
    collect.record({box.pk: (85 * MB, 1)})
    inside, outside = Client(), Client()
    inside.force_login(cast.sub_admin)
    outside.force_login(cast.sibling_admin)
    page = inside.get(reverse("usage:quota-warnings"))
    assert page.status_code == 200 and "ann@quota.example" in page.content.decode()
    assert (
        "1 mailbox is over 80 % of its quota."
        in inside.get(reverse("portal:home")).content.decode()
    )
    other = outside.get(reverse("usage:quota-warnings"))
    assert other.status_code in (200, 403)
    assert "ann@quota.example" not in other.content.decode()
    assert "of its quota" not in outside.get(reverse("portal:home")).content.decode()


def test_a_mail_server_away_means_the_warning_is_mailed_on_the_next_run(box, monkeypatch) -> None:
    collect.record({box.pk: (90 * MB, 1)})

    def refused(*args, **kwargs):
        raise ConnectionRefusedError("the mail server is down")

    monkeypatch.setattr(quota_warnings, "send_mail", refused)
    assert quota_warnings.send_pending() == 0
    monkeypatch.undo()
    assert quota_warnings.send_pending() == 1
    assert QuotaWarning.objects.get().mailed_at is not None
