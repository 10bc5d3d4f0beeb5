"""Enrolment tokens over the API: scoping contract, shown once, revocation, validation."""

from __future__ import annotations

import pytest
from django.test import override_settings
from django.urls import reverse

from servers import actions as server_actions
from servers import enrolment
from servers.models import EnrolmentToken, Zone
from tenants.models import Customer
from tests.api.contracts import ScopedEndpointContract
from tests.fixtures import Cast, token_client


def zone_of(customer: Customer, name: str = "DC1") -> Zone:
    existing = Zone.objects.filter(customer=customer, name=name).first()
    return existing or server_actions.create_zone(actor=None, customer=customer, name=name)


class TestEnrolmentTokenEndpoint(ScopedEndpointContract):
    basename = "enrolmenttoken"
    model = EnrolmentToken
    audit_prefix = "enrolment_token."

    def make_in_scope(self, cast: Cast) -> EnrolmentToken:
        zone = zone_of(cast.ministry)
        return enrolment.create_enrolment_token(actor=None, zone=zone, name="ministry rack")[0]

    def make_outside(self, cast: Cast) -> EnrolmentToken:
        zone = zone_of(cast.isp)
        return enrolment.create_enrolment_token(actor=None, zone=zone, name="isp rack")[0]

    def create_payload(self, cast: Cast) -> dict:
        return {"name": "new rack", "zone": zone_of(cast.government).pk, "maxUses": 5}


pytestmark = pytest.mark.django_db


@override_settings(BASE_URL="https://portal.example.net")
def test_token_is_returned_once_with_the_operator_command(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    zone = zone_of(cast.government)
    response = client.post(
        reverse("enrolmenttoken-list"), {"name": "rack", "zone": zone.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token"].startswith("umsnode_")
    assert body["command"] == (
        "cd /tmp && wget https://portal.example.net/install/bootstrapcore.sh && "
        f"sh bootstrapcore.sh {body['token']}"
    )
    assert (body["maxUses"], body["uses"], body["state"]) == (1, 0, "active")
    detail = client.get(reverse("enrolmenttoken-detail", args=[body["id"]])).json()
    assert "token" not in detail and "command" not in detail
    assert detail["prefix"] == body["token"].split("_")[1]


def test_delete_revokes_and_keeps_the_row(cast: Cast) -> None:
    token = enrolment.create_enrolment_token(actor=None, zone=zone_of(cast.government), name="x")[0]
    client = token_client(cast.sub_admin)
    assert client.delete(reverse("enrolmenttoken-detail", args=[token.pk])).status_code == 204
    token.refresh_from_db()
    assert token.revoked_at is not None
    detail = client.get(reverse("enrolmenttoken-detail", args=[token.pk])).json()
    assert detail["state"] == "revoked"


def test_tokens_cannot_be_made_for_zones_out_of_scope(cast: Cast) -> None:
    response = token_client(cast.sub_admin).post(
        reverse("enrolmenttoken-list"), {"name": "x", "zone": zone_of(cast.isp).pk}, format="json"
    )
    assert response.status_code == 400
    assert "zone" in response.json()["errors"]
    assert not EnrolmentToken.objects.exists()


def test_viewers_may_list_but_not_create(cast: Cast) -> None:
    zone = zone_of(cast.ministry)
    client = token_client(cast.ministry_viewer)
    assert client.get(reverse("enrolmenttoken-list")).status_code == 200
    response = client.post(
        reverse("enrolmenttoken-list"), {"name": "x", "zone": zone.pk}, format="json"
    )
    assert response.status_code == 403
    assert not EnrolmentToken.objects.exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"maxUses": 0}, "maxUses"),
        ({"maxUses": 1001}, "maxUses"),
        ({"maxUses": 10**30}, "maxUses"),
        ({"expiresAt": "2001-01-01T00:00:00Z"}, "expiresAt"),
        ({"expiresAt": "2999-01-01T00:00:00Z"}, "expiresAt"),
        ({"name": "bad\x00name"}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"zone": 10**30}, "zone"),
        ({"prefix": "abc"}, "prefix"),
    ],
)
def test_bad_token_input_is_400(cast: Cast, payload: dict, field: str) -> None:
    data = {"name": "rack", "zone": zone_of(cast.government).pk, **payload}
    response = token_client(cast.sub_admin).post(
        reverse("enrolmenttoken-list"), data, format="json"
    )
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not EnrolmentToken.objects.exists()


def test_list_filters_by_zone(cast: Cast) -> None:
    first, second = zone_of(cast.government, "A"), zone_of(cast.government, "B")
    enrolment.create_enrolment_token(actor=None, zone=first, name="a")
    in_second = enrolment.create_enrolment_token(actor=None, zone=second, name="b")[0]
    response = token_client(cast.sub_admin).get(reverse("enrolmenttoken-list"), {"zone": second.pk})
    assert [row["id"] for row in response.json()["results"]] == [in_second.pk]
