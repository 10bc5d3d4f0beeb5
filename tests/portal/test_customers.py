"""The customer tree browser: walking, searching, and every change through its form."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from tenants import actions
from tenants.models import Customer
from tests.fixtures import Cast
from tests.portal.conftest import form_errors

pytestmark = pytest.mark.django_db


def detail(customer: Customer) -> str:
    return reverse("tenants:customer-detail", args=[customer.pk])


def test_tree_starts_at_the_home_customer_with_its_children(cast: Cast, login: Any) -> None:
    response = login(cast.sub_admin).get(reverse("tenants:customer-list"))
    assert response.context["home"] == cast.government
    assert [c.name for c, _trail in response.context["rows"]] == ["Ministry"]
    html = response.content.decode()
    assert "Provider" not in html and "ISP" not in html


def test_breadcrumbs_stop_at_the_administrators_scope(cast: Cast, login: Any) -> None:
    response = login(cast.sub_admin).get(detail(cast.department))
    assert [c.name for c in response.context["crumbs"]] == ["Government", "Ministry"]
    assert b"Provider" not in response.content
    root_view = login(cast.root_admin).get(detail(cast.department))
    assert [c.name for c in root_view.context["crumbs"]] == ["Provider", "Government", "Ministry"]


def test_children_are_paged_by_keyset(cast: Cast, login: Any) -> None:
    for i in range(55):
        actions.create_customer(actor=None, name=f"Unit {i:02}", parent=cast.ministry)
    client = login(cast.sub_admin)
    first = client.get(detail(cast.ministry))
    assert len(first.context["children"]) == 50
    page = first.context["page"]
    assert page.next_after is not None and page.is_first
    second = client.get(detail(cast.ministry) + f"?after={page.next_after}")
    names = {c.name for c in first.context["children"]} | {
        c.name for c in second.context["children"]
    }
    assert len(second.context["children"]) == 6  # 55 units + Department
    assert len(names) == 56


def test_search_finds_names_in_the_subtree_only(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    found = client.get(reverse("tenants:customer-list"), {"q": "part"})
    assert [(c.name, trail) for c, trail in found.context["rows"]] == [
        ("Department", "Government › Ministry")
    ]
    assert not client.get(reverse("tenants:customer-list"), {"q": "Shop"}).context["rows"]
    within = client.get(
        reverse("tenants:customer-list"), {"q": "Ministry", "within": cast.ministry.pk}
    )
    assert [c.name for c, _ in within.context["rows"]] == ["Ministry"]
    outsider = login(cast.sibling_admin).get(
        reverse("tenants:customer-list"), {"q": "x", "within": cast.ministry.pk}
    )
    assert outsider.status_code == 404


def test_create_sub_customer_writes_it_and_an_audit_record(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    response = client.post(
        reverse("tenants:customer-create", args=[cast.ministry.pk]),
        {"name": "Archive Office", "notes": "Paper and microfilm"},
    )
    created = Customer.objects.get(name="Archive Office")
    assert response.status_code == 302 and response["Location"] == detail(created)
    assert created.parent_id == cast.ministry.pk and created.notes == "Paper and microfilm"
    record = AuditRecord.objects.get(action="customer.create", object_id=str(created.pk))
    assert record.actor_id == cast.sub_admin.pk
    assert record.channel == "portal"
    assert record.customer_path == created.path
    page = client.get(response["Location"])
    assert "Customer “Archive Office” created." in page.content.decode()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x" * 101, "at most 100 characters"),
        ("Bell\x07Office", "Control or invisible characters are not allowed (found U+0007)"),
        ("Evil\u202eOffice", "found U+202E"),
        ("Line\nBreak", "found U+000A"),
        ("Null\x00Byte", "Null characters are not allowed"),
        ("   ", "This field is required"),
        ("Department", "already exists at this level"),
    ],
)
def test_bad_names_give_form_errors_and_change_nothing(
    cast: Cast, login: Any, name: str, message: str
) -> None:
    client = login(cast.sub_admin)
    before = Customer.objects.count()
    records = AuditRecord.objects.count()
    response = client.post(
        reverse("tenants:customer-create", args=[cast.ministry.pk]), {"name": name, "notes": ""}
    )
    assert response.status_code == 200
    assert any(message in e for e in form_errors(response)["name"]), form_errors(response)
    assert Customer.objects.count() == before
    assert AuditRecord.objects.count() == records


def test_overlong_notes_are_refused(cast: Cast, login: Any) -> None:
    response = login(cast.sub_admin).post(
        reverse("tenants:customer-edit", args=[cast.ministry.pk]),
        {"name": "Ministry", "notes": "n" * 2001},
    )
    assert "notes" in form_errors(response)
    cast.ministry.refresh_from_db()
    assert cast.ministry.notes == ""


def test_rename_and_notes(cast: Cast, login: Any) -> None:
    response = login(cast.sub_admin).post(
        reverse("tenants:customer-edit", args=[cast.ministry.pk]),
        {"name": "Ministry of Archives", "notes": "Renamed in 2026"},
    )
    assert response.status_code == 302
    cast.ministry.refresh_from_db()
    assert (cast.ministry.name, cast.ministry.notes) == ("Ministry of Archives", "Renamed in 2026")
    assert AuditRecord.objects.filter(action="customer.update", actor_id=cast.sub_admin.pk).exists()


def test_move_offers_only_destinations_outside_the_subtree(cast: Cast, login: Any) -> None:
    client = login(cast.root_admin)
    url = reverse("tenants:customer-move", args=[cast.ministry.pk])
    offered = {
        str(c.pk) for c in client.get(url).context["form"].fields["parent"].display_objects()
    }
    assert offered == {str(cast.provider.pk), str(cast.isp.pk), str(cast.shop.pk)}
    # A descendant is no valid choice even when posted by hand.
    response = client.post(url, {"parent": cast.department.pk})
    assert "parent" in form_errors(response)
    cast.ministry.refresh_from_db()
    assert cast.ministry.parent_id == cast.government.pk
    response = client.post(url, {"parent": cast.isp.pk})
    assert response.status_code == 302
    cast.department.refresh_from_db()
    assert cast.department.path.startswith(cast.isp.path)


def test_move_search_narrows_the_choices(cast: Cast, login: Any) -> None:
    url = reverse("tenants:customer-move", args=[cast.department.pk])
    response = login(cast.root_admin).get(url, {"q": "sho"})
    assert [c.name for c in response.context["form"].fields["parent"].display_objects()] == ["Shop"]


def test_move_outside_scope_is_refused(cast: Cast, login: Any) -> None:
    response = login(cast.sub_admin).post(
        reverse("tenants:customer-move", args=[cast.department.pk]), {"parent": cast.shop.pk}
    )
    assert "parent" in form_errors(response)
    cast.department.refresh_from_db()
    assert cast.department.parent_id == cast.ministry.pk


def test_disable_and_enable(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    response = client.post(reverse("tenants:customer-disable", args=[cast.ministry.pk]))
    assert response.status_code == 302
    cast.ministry.refresh_from_db()
    assert not cast.ministry.is_active
    page = client.get(detail(cast.department))
    assert "Logins blocked: a customer above is disabled" in page.content.decode()
    client.post(reverse("tenants:customer-enable", args=[cast.ministry.pk]))
    cast.ministry.refresh_from_db()
    assert cast.ministry.is_active


def test_disabling_the_home_customer_shows_the_error(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    response = client.post(
        reverse("tenants:customer-disable", args=[cast.government.pk]), follow=True
    )
    assert "You cannot disable your own home customer." in response.content.decode()
    cast.government.refresh_from_db()
    assert cast.government.is_active


def test_delete_only_when_empty(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    response = client.post(reverse("tenants:customer-delete", args=[cast.ministry.pk]))
    assert response.status_code == 200
    assert "Only an empty customer can be deleted" in " ".join(
        str(e) for e in response.context["form"].non_field_errors()
    )
    assert Customer.objects.filter(pk=cast.ministry.pk).exists()
    response = client.post(reverse("tenants:customer-delete", args=[cast.department.pk]))
    assert response.status_code == 302 and response["Location"] == detail(cast.ministry)
    assert not Customer.objects.filter(pk=cast.department.pk).exists()
    assert AuditRecord.objects.filter(action="customer.delete", actor_id=cast.sub_admin.pk).exists()


def test_names_are_escaped(cast: Cast, login: Any) -> None:
    actions.create_customer(actor=None, name="<script>alert(1)</script>", parent=cast.ministry)
    html = login(cast.sub_admin).get(detail(cast.ministry)).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
