"""The generic object views (ums/portal/generic.py) as the servers pages declare them:
scoped lookup (404 outside), every error at once, the action audited, message and redirect."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from servers import actions as server_actions
from servers.models import Node, Zone
from tests.fixtures import Cast
from tests.portal.conftest import form_errors
from ums.portal.generic import scoped_object_or_404

pytestmark = pytest.mark.django_db


@pytest.fixture
def zone(cast: Cast) -> Zone:
    return server_actions.create_zone(
        actor=None,
        customer=cast.government,
        name="Gov DC",
        site_kind="datacentre",
        redundancy="hot-warm",
    )


@pytest.fixture
def node(zone: Zone) -> Node:
    return Node.objects.create(
        customer=zone.customer,
        customer_path=zone.customer_path,
        zone=zone,
        hostname="mx1.gov.example",
        addresses=["192.0.2.10"],
        ssh_address="192.0.2.10",
        roles=["smtp"],
    )


def test_zone_edit_saves_through_the_action_with_message_and_redirect(
    cast: Cast, zone: Zone, login: Any
) -> None:
    client = login(cast.sub_admin)
    url = reverse("servers:zone-edit", args=[zone.pk])
    page = client.get(url)
    assert page.status_code == 200 and 'value="Gov DC"' in page.content.decode()
    response = client.post(
        url,
        {"name": "Gov DC 2", "location": "", "site_kind": "datacentre", "redundancy": "hot-hot"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("servers:zone-list")
    assert "Zone saved." in response.content.decode()
    zone.refresh_from_db()
    assert (zone.name, zone.redundancy) == ("Gov DC 2", "hot-hot")
    assert AuditRecord.objects.filter(object_id=str(zone.pk), action__contains="zone").exists()


def test_zone_edit_shows_every_bad_field_and_changes_nothing(
    cast: Cast, zone: Zone, login: Any
) -> None:
    client = login(cast.sub_admin)
    response = client.post(
        reverse("servers:zone-edit", args=[zone.pk]),
        {"name": "", "site_kind": "moon", "redundancy": "none-at-all", "notes": "a\x00b"},
    )
    assert response.status_code == 200
    assert {"name", "site_kind", "redundancy", "notes"} <= set(form_errors(response))
    zone.refresh_from_db()
    assert zone.name == "Gov DC"


def test_node_edit_refusal_from_the_action_lands_on_its_field(
    cast: Cast, node: Node, login: Any
) -> None:
    client = login(cast.sub_admin)
    url = reverse("servers:node-edit", args=[node.pk])
    assert client.get(url).status_code == 200
    response = client.post(
        url,
        {"zone": node.zone_id, "roles": ["smtp"], "ssh_port": 22, "storage_service": "x" * 70},
    )
    assert response.status_code == 200
    assert "storage_service" in form_errors(response)
    response = client.post(
        url,
        {"zone": node.zone_id, "roles": ["smtp"], "ssh_port": 2222, "storage_service": "zfs"},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("servers:node-detail", args=[node.pk])
    node.refresh_from_db()
    assert node.ssh_port == 2222


def test_objects_outside_scope_or_absurd_ids_are_404(
    cast: Cast, zone: Zone, node: Node, login: Any
) -> None:
    client = login(cast.sibling_admin)
    for url in (
        reverse("servers:zone-edit", args=[zone.pk]),
        reverse("servers:node-edit", args=[node.pk]),
    ):
        assert client.get(url).status_code == 404
        assert client.post(url, {"name": "x"}).status_code == 404
    from django.http import Http404

    for pk in ("0", "-1", "x", str(2**70)):
        with pytest.raises(Http404):
            scoped_object_or_404(Zone, cast.root_admin, pk)
