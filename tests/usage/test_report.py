"""Usage reports: by child and by day from the daily snapshots, scoped (404 outside), CSV,
all field errors at once, and the portal page."""

from __future__ import annotations

import csv
import datetime
import io

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from tests.api.contracts import COVERED, ScopedEndpointContract
from tests.fixtures import make_admin, token_client
from tests.mail.helpers import make_domain, make_mailbox
from usage import collect, snapshot
from usage.models import MonthlyReportRecipient

pytestmark = pytest.mark.django_db
# Scoping of these routes (outsider 404, unauthenticated, permission) is tested below.
COVERED.update({"usage-report", "usage-report-csv"})
D1, D2 = datetime.date(2026, 5, 1), datetime.date(2026, 5, 2)


@pytest.fixture
def history(cast):
    ministry_box = make_mailbox(make_domain(cast.ministry, "m.example"), "ann", quota_mb=2048)
    dept_box = make_mailbox(make_domain(cast.department, "d.example"), "bob", quota_mb=1024)
    government_box = make_mailbox(make_domain(cast.government, "g.example"), "cy", quota_mb=512)
    collect.record({ministry_box.pk: (100, 1), dept_box.pk: (300, 3), government_box.pk: (7, 1)})
    snapshot.take(D1)
    collect.record({ministry_box.pk: (500, 2)})
    snapshot.take(D2)


def _get(client, **query):
    return client.get(reverse("usage-report"), query)


def test_by_child_lines_add_up_to_the_subtree(cast, history) -> None:
    client = token_client(cast.sub_admin)
    response = _get(client, customer=cast.government.pk, **{"from": D1, "to": D2})
    assert response.status_code == 200, response.content
    lines = {line["key"]: line for line in response.json()["lines"]}
    assert set(lines) == {str(cast.ministry.pk), "own"}
    ministry = lines[str(cast.ministry.pk)]
    # Ministry's subtree: its own mailbox and Department's; used 400 then 800 bytes.
    assert ministry["days"] == 2
    assert ministry["average"]["mailboxes"] == 2 and ministry["peak"]["usedBytes"] == 800
    assert ministry["average"]["usedBytes"] == 600 and ministry["average"]["quotaMb"] == 3072
    assert lines["own"]["peak"]["usedBytes"] == 7
    assert response.json()["notBuilt"] == []


def test_by_day_follows_the_subtree_day_by_day(cast, history) -> None:
    client = token_client(cast.sub_admin)
    response = _get(client, customer=cast.government.pk, group="day", **{"from": D1, "to": D2})
    days = [(line["key"], line["average"]["usedBytes"]) for line in response.json()["lines"]]
    assert days == [(D1.isoformat(), 407), (D2.isoformat(), 807)]


def test_a_customer_outside_scope_is_404_and_bad_fields_are_all_reported(cast, history) -> None:
    client = token_client(cast.sub_admin)
    assert _get(client, customer=cast.isp.pk).status_code == 404
    response = _get(client, customer="x", group="week", **{"from": "May", "to": "2026-13-01"})
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"customer", "group", "from", "to"}


def test_csv_export_has_one_line_per_child(cast, history) -> None:
    client = token_client(cast.sub_admin)
    response = client.get(
        reverse("usage-report-csv"), {"customer": cast.government.pk, "from": D1, "to": D2}
    )
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:4] == ["customer", "name", "days", "average_mailboxes"]
    assert [r[1] for r in rows[1:]] == ["Ministry", "Government itself"]


def test_portal_page_shows_the_table_and_downloads_csv(cast, history) -> None:
    client = Client()
    client.force_login(cast.sub_admin)
    query = {"customer": cast.government.pk, "from": D1, "to": D2}
    page = client.get(reverse("usage:report"), query)
    assert page.status_code == 200
    assert "Ministry" in page.content.decode() and "800" in page.content.decode()
    download = client.get(reverse("usage:report"), {**query, "download": "csv"})
    assert download["Content-Type"].startswith("text/csv")
    assert client.get(reverse("usage:report"), {"customer": cast.isp.pk}).status_code == 404


def test_the_chart_draws_the_figure_chosen(cast, history) -> None:
    client = Client()
    client.force_login(cast.sub_admin)
    query = {"customer": cast.government.pk, "from": D1, "to": D2}
    used = client.get(reverse("usage:report"), query)
    mailboxes = client.get(reverse("usage:report"), {**query, "chart": "mailboxes"})
    assert used.context["chart_figure"] == "used_bytes"
    assert mailboxes.context["chart_figure"] == "mailboxes"
    assert "Mailboxes per child customer" in mailboxes.content.decode()
    titles = [bar.title for bar in mailboxes.context["bars"]]
    assert titles and titles != [bar.title for bar in used.context["bars"]]
    bad = client.get(reverse("usage:report"), {**query, "chart": "<script>"})
    assert bad.status_code == 200 and "chart" in bad.context["errors"]
    assert "<script>" not in bad.content.decode()


@pytest.mark.parametrize("route", ["usage-report", "usage-report-csv"])
def test_unauthenticated_refused_no_permission_403_outside_404(cast, history, route) -> None:
    assert APIClient().get(reverse(route)).status_code in (401, 403)
    mail_only = make_admin(cast.government, "mail.only", ["mail.view"])
    assert token_client(mail_only).get(reverse(route)).status_code == 403
    outsider = token_client(cast.sibling_admin)
    assert outsider.get(reverse(route), {"customer": cast.government.pk}).status_code == 404
    assert outsider.get(reverse(route), {"customer": cast.isp.pk}).status_code == 200


def test_the_report_runs_a_constant_number_of_queries(
    cast, history, django_assert_max_num_queries
) -> None:
    client = token_client(cast.root_admin)
    for customer in (cast.provider, cast.government):
        with django_assert_max_num_queries(12):
            assert _get(client, customer=customer.pk).status_code == 200


def test_monthly_report_goes_once_to_each_recipient_with_the_csv(cast, history) -> None:
    from django.core import mail as outbox

    from audit.models import AuditRecord
    from usage import actions, monthly

    recipient = actions.add_monthly_recipient(
        actor=cast.sub_admin, customer=cast.government, administrator=cast.sub_admin
    )
    assert AuditRecord.objects.filter(action="usage.monthly_recipient.add").count() == 1
    june = datetime.date(2026, 6, 3)  # the history is in May
    assert monthly.send_due(june) == 1
    assert monthly.send_due(june) == 0  # once per month, whatever the number of runs
    message = outbox.outbox[0]
    assert message.to == [cast.sub_admin.email] and "2026-05" in message.subject
    assert "Ministry" in message.body
    name, content, _kind = message.attachments[0]
    assert name.endswith("2026-05.csv") and "Government itself" in content
    recipient.refresh_from_db()
    assert recipient.last_sent_month == datetime.date(2026, 5, 1)
    assert monthly.send_due(datetime.date(2026, 7, 1)) == 1


def test_a_recipient_must_see_the_customer_and_the_actor_must_see_both(cast) -> None:
    from django.core.exceptions import ValidationError
    from django.http import Http404

    from usage import actions

    with pytest.raises(ValidationError):
        # The ministry viewer cannot see Government (above its home customer).
        actions.add_monthly_recipient(
            actor=cast.root_admin, customer=cast.government, administrator=cast.ministry_viewer
        )
    with pytest.raises(Http404):
        actions.add_monthly_recipient(
            actor=cast.sub_admin, customer=cast.isp, administrator=cast.sub_admin
        )
    client = Client()
    client.force_login(cast.sub_admin)
    response = client.post(
        reverse("usage:monthly-add"),
        {"customer": cast.ministry.pk, "administrator": cast.ministry_viewer.pk},
    )
    assert response.status_code == 302
    page = client.get(reverse("usage:report"), {"customer": cast.ministry.pk}).content.decode()
    assert cast.ministry_viewer.email in page
    from usage.models import MonthlyReportRecipient

    recipient = MonthlyReportRecipient.objects.get()
    outsider = Client()
    outsider.force_login(cast.sibling_admin)
    assert outsider.post(reverse("usage:monthly-remove", args=[recipient.pk])).status_code == 404
    client.post(reverse("usage:monthly-remove", args=[recipient.pk]))
    assert not MonthlyReportRecipient.objects.exists()


def test_monthly_recipients_through_the_api(cast) -> None:
    from audit.models import AuditRecord
    from usage.models import MonthlyReportRecipient

    api = token_client(cast.sub_admin)
    url = "/api/v1/usage/monthly-recipients/"
    # Every bad field at once, nothing created.
    response = api.post(url, {"customer": "x", "administrator": 999999999}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"customer", "administrator"}
    # A recipient who cannot see the customer's usage: a field error, nothing created.
    response = api.post(
        url,
        {"customer": cast.government.pk, "administrator": cast.ministry_viewer.pk},
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"administrator"}
    assert not MonthlyReportRecipient.objects.exists()

    response = api.post(
        url, {"customer": cast.ministry.pk, "administrator": cast.ministry_viewer.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["administratorUsername"] == cast.ministry_viewer.username
    assert created["lastSentMonth"] is None
    assert AuditRecord.objects.filter(action="usage.monthly_recipient.add").count() == 1
    listed = api.get(url, {"customer": cast.ministry.pk}).json()["results"]
    assert [r["id"] for r in listed] == [created["id"]]

    outsider = token_client(cast.sibling_admin)
    assert outsider.get(url).json()["results"] == []
    assert outsider.delete(f"{url}{created['id']}/").status_code == 404
    mail_only = make_admin(cast.government, "mail.only2", ["mail.view"])
    assert token_client(mail_only).get(url).status_code == 403

    assert api.delete(f"{url}{created['id']}/").status_code == 204
    assert not MonthlyReportRecipient.objects.exists()
    assert AuditRecord.objects.filter(action="usage.monthly_recipient.remove").count() == 1


class TestMonthlyRecipientEndpoint(ScopedEndpointContract):
    basename = "monthlyrecipient"
    audit_prefix = "usage.monthly_recipient"

    model = MonthlyReportRecipient

    def make_in_scope(self, cast):
        from usage import actions

        return actions.add_monthly_recipient(
            actor=None, customer=cast.ministry, administrator=cast.ministry_viewer
        )

    def make_outside(self, cast):
        from usage import actions

        return actions.add_monthly_recipient(
            actor=None, customer=cast.isp, administrator=cast.sibling_admin
        )

    def create_payload(self, cast) -> dict:
        return {"customer": cast.department.pk, "administrator": cast.ministry_viewer.pk}
