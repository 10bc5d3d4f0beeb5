"""Customers endpoint: contract, tree operations and bad input."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from tenants import actions
from tenants.models import Customer
from tests.api.contracts import ScopedEndpointContract
from tests.fixtures import Cast, token_client


class TestCustomerEndpoint(ScopedEndpointContract):
    basename = "customer"
    model = Customer
    audit_prefix = "customer."

    def make_in_scope(self, cast: Cast) -> Customer:
        return actions.create_customer(actor=None, name="Archive", parent=cast.ministry)

    def make_outside(self, cast: Cast) -> Customer:
        return cast.shop

    def create_payload(self, cast: Cast) -> dict:
        return {"name": "Statistics Office", "parent": cast.government.pk}

    def update_payload(self, cast: Cast, obj: Customer) -> dict:
        return {"name": "Archive and Records"}

    def escape_payload(self, cast: Cast, obj: Customer) -> dict:
        # parent is not writable through PATCH; the move endpoint covers it below.
        return {"parent": cast.isp.pk}


pytestmark = pytest.mark.django_db


def test_create_under_customer_outside_scope_is_refused(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("customer-list"), {"name": "Sneaky", "parent": cast.isp.pk}, format="json"
    )
    assert response.status_code == 400
    assert "parent" in response.json()["errors"]
    assert not Customer.objects.filter(name="Sneaky").exists()


def test_create_above_own_customer_is_refused(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("customer-list"), {"name": "Sideways", "parent": cast.provider.pk}, format="json"
    )
    assert response.status_code == 400
    assert not Customer.objects.filter(name="Sideways").exists()


def test_move_subtree_rewrites_paths_and_is_audited(cast: Cast) -> None:
    client = token_client(cast.root_admin)
    response = client.post(
        reverse("customer-move", args=[cast.ministry.pk]), {"parent": cast.isp.pk}, format="json"
    )
    assert response.status_code == 200, response.content
    cast.department.refresh_from_db()
    cast.ministry_viewer.refresh_from_db()
    assert cast.department.path == f"{cast.isp.path}{cast.ministry.pk}/{cast.department.pk}/"
    assert cast.department.depth == 3
    # The ministry's administrator follows: now in the ISP subtree, out of Government's.
    assert cast.ministry_viewer.customer_path.startswith(cast.isp.path)
    assert (
        token_client(cast.sub_admin)
        .get(reverse("customer-detail", args=[cast.department.pk]))
        .status_code
        == 404
    )
    assert AuditRecord.objects.filter(
        action="customer.move", object_id=str(cast.ministry.pk)
    ).exists()


def test_move_into_own_descendant_is_refused(cast: Cast) -> None:
    client = token_client(cast.root_admin)
    before = Customer.objects.get(pk=cast.government.pk).path
    response = client.post(
        reverse("customer-move", args=[cast.government.pk]),
        {"parent": cast.department.pk},
        format="json",
    )
    assert response.status_code == 400
    assert "descendant" in response.json()["errors"]["parent"][0]
    assert Customer.objects.get(pk=cast.government.pk).path == before


def test_move_outside_scope_is_refused(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("customer-move", args=[cast.department.pk]), {"parent": cast.isp.pk}, format="json"
    )
    assert response.status_code == 400
    cast.department.refresh_from_db()
    assert cast.department.parent_id == cast.ministry.pk


def test_names_unique_among_siblings_case_insensitively(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("customer-list"), {"name": "ministry", "parent": cast.government.pk}, format="json"
    )
    assert response.status_code == 400
    assert "name" in response.json()["errors"]
    # The same name elsewhere in the tree is fine.
    response = client.post(
        reverse("customer-list"), {"name": "Ministry", "parent": cast.department.pk}, format="json"
    )
    assert response.status_code == 201


def test_disable_blocks_logins_below(cast: Cast, client) -> None:
    from tests.fixtures import PASSWORD

    api = token_client(cast.sub_admin)
    viewer_api = token_client(cast.ministry_viewer)
    response = api.post(reverse("customer-disable", args=[cast.ministry.pk]))
    assert response.status_code == 200
    assert response.json()["isActive"] is False
    assert not client.login(username="ministry.viewer", password=PASSWORD)
    assert viewer_api.get(reverse("customer-list")).status_code == 401
    api.post(reverse("customer-enable", args=[cast.ministry.pk]))
    assert client.login(username="ministry.viewer", password=PASSWORD)


def test_cannot_disable_own_home_customer(cast: Cast) -> None:
    response = token_client(cast.sub_admin).post(
        reverse("customer-disable", args=[cast.government.pk])
    )
    assert response.status_code == 400


def test_delete_only_when_empty(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    response = client.delete(reverse("customer-detail", args=[cast.ministry.pk]))
    assert response.status_code == 400
    assert Customer.objects.filter(pk=cast.ministry.pk).exists()
    response = client.delete(reverse("customer-detail", args=[cast.department.pk]))
    assert response.status_code == 204
    assert not Customer.objects.filter(pk=cast.department.pk).exists()


def test_children_and_breadcrumb_stay_within_scope(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    children = client.get(reverse("customer-children", args=[cast.government.pk])).json()
    assert [c["name"] for c in children["results"]] == ["Ministry"]
    crumbs = client.get(reverse("customer-ancestors", args=[cast.department.pk])).json()
    # Provider is above sub_admin's home customer: it must not be revealed.
    assert [c["name"] for c in crumbs] == ["Government", "Ministry", "Department"]


def test_subtree_search(cast: Cast) -> None:
    client = token_client(cast.root_admin)
    url = reverse("customer-list")
    found = client.get(url, {"subtreeOf": cast.government.pk, "search": "dep"}).json()
    assert [c["name"] for c in found["results"]] == ["Department"]
    response = client.get(url, {"subtreeOf": "99999999999999999999999"})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "x" * 101}, "name"),
        ({"name": "Bad\nName"}, "name"),
        ({"name": "Bad\x00Name"}, "name"),
        ({"name": "\u202eevil"}, "name"),
        ({"name": ["list"]}, "name"),
        ({"name": "Fine", "parent": "abc"}, "parent"),
        ({"name": "Fine", "parent": 2**70}, "parent"),
        ({"name": "Fine", "parent": True}, "parent"),
        ({"name": "Fine", "unexpected": 1}, "unexpected"),
        ({"name": " padded "}, "name"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_input_gives_field_errors_and_changes_nothing(
    cast: Cast, payload: dict, field: str
) -> None:
    payload = {"parent": cast.government.pk, **payload}
    count = Customer.objects.count()
    # The last record's number (numbers come from a sequence: not the count, issue 19).
    audit = AuditRecord.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    response = token_client(cast.sub_admin).post(reverse("customer-list"), payload, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["message"]
    assert field in body["errors"]
    assert Customer.objects.count() == count
    # Only the token's first use is recorded; no customer change.
    assert not AuditRecord.objects.filter(seq__gt=audit, action__startswith="customer.").exists()


def test_malformed_json_is_a_clear_400(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    response = client.generic(
        "POST", reverse("customer-list"), b"{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert "message" in response.json()


def test_read_only_token_cannot_write(cast: Cast) -> None:
    client = token_client(cast.sub_admin, read_only=True)
    assert client.get(reverse("customer-list")).status_code == 200
    response = client.post(
        reverse("customer-list"), {"name": "RO", "parent": cast.government.pk}, format="json"
    )
    assert response.status_code == 403


def test_view_only_admin_cannot_write(cast: Cast) -> None:
    client = token_client(cast.ministry_viewer)
    response = client.post(
        reverse("customer-list"), {"name": "Nope", "parent": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 403
