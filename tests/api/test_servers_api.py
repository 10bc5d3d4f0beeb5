"""Zones, nodes and node alerts in the API: the scoping contract and bad input."""

from __future__ import annotations

import pytest
from django.urls import reverse

from servers import actions as server_actions
from servers.choices import NodeStatus
from servers.models import Node, NodeAlert, Zone
from tests.api.contracts import ScopedEndpointContract
from tests.fixtures import Cast, token_client

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKvv4K5vzRcZ8x3sV4VqCTeQ2rrYbOsM9cS/KPx7Cqq3"


def make_zone(customer, name: str = "DC") -> Zone:
    return server_actions.create_zone(actor=None, customer=customer, name=name)


def make_node(customer, hostname: str = "smtp1.example.org") -> Node:
    zone = make_zone(customer, f"Zone of {hostname}")
    return Node.objects.create(
        customer=customer,
        customer_path=customer.path,
        zone=zone,
        hostname=hostname,
        ssh_address="192.0.2.20",
        status=NodeStatus.ACTIVE,
        pinned_host_keys=[KEY],
        reported_host_keys=[KEY],
    )


class TestZoneEndpoint(ScopedEndpointContract):
    basename = "zone"
    model = Zone
    audit_prefix = "zone."

    def make_in_scope(self, cast: Cast) -> Zone:
        return make_zone(cast.ministry, "Ministry DC")

    def make_outside(self, cast: Cast) -> Zone:
        return make_zone(cast.shop, "Shop DC")

    def create_payload(self, cast: Cast) -> dict:
        return {"customer": cast.government.pk, "name": "Gov DC", "redundancy": "hot-warm"}

    def update_payload(self, cast: Cast, obj: Zone) -> dict:
        return {"location": "Ulaanbaatar"}

    def escape_payload(self, cast: Cast, obj: Zone) -> dict:
        return {"customer": cast.isp.pk}


class TestNodeEndpoint(ScopedEndpointContract):
    basename = "node"
    model = Node
    audit_prefix = "node."
    can_delete = False  # nodes are decommissioned (a node action), never deleted

    def make_in_scope(self, cast: Cast) -> Node:
        return make_node(cast.ministry)

    def make_outside(self, cast: Cast) -> Node:
        return make_node(cast.shop, "shop.example.org")

    def update_payload(self, cast: Cast, obj: Node) -> dict:
        return {"roles": ["smtp", "imap"]}

    def escape_payload(self, cast: Cast, obj: Node) -> dict:
        return {"zone": make_zone(cast.isp, "ISP DC").pk}


class TestNodeAlertEndpoint(ScopedEndpointContract):
    basename = "nodealert"
    model = NodeAlert
    can_delete = False

    def make_in_scope(self, cast: Cast) -> NodeAlert:
        return server_actions.raise_alert(make_node(cast.ministry), "offline", "gone")

    def make_outside(self, cast: Cast) -> NodeAlert:
        return server_actions.raise_alert(make_node(cast.shop, "s.example.org"), "offline", "x")


pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "payload",
    [
        {"roles": ["mainframe"]},
        {"roles": "smtp"},
        {"sshPort": 70000},
        {"sshPort": "22; reboot"},
        {"storageService": "zfs; reboot"},
        {"hostname": "renamed.example.org"},
        {"status": "active"},
    ],
)
def test_bad_node_updates_are_refused(cast: Cast, payload: dict) -> None:
    node = make_node(cast.ministry)
    response = token_client(cast.sub_admin).patch(
        reverse("node-detail", args=[node.pk]), payload, format="json"
    )
    assert response.status_code == 400, response.content
    fresh = Node.objects.get(pk=node.pk)
    assert (fresh.roles, fresh.ssh_port, fresh.hostname) == ([], 22, "smtp1.example.org")


def test_node_actions_need_an_approved_node_and_valid_input(cast: Cast) -> None:
    node = make_node(cast.ministry)
    Node.objects.filter(pk=node.pk).update(status=NodeStatus.PENDING)
    client = token_client(cast.sub_admin)
    url = reverse("node-node-action", args=[node.pk])
    assert client.post(url, {"action": "reboot"}, format="json").status_code == 400
    assert client.post(url, {"action": "format-disk"}, format="json").status_code == 400
    assert client.post(url, {"action": "restart_service"}, format="json").status_code == 400


def test_metrics_range_is_validated(cast: Cast) -> None:
    node = make_node(cast.ministry)
    client = token_client(cast.sub_admin)
    url = reverse("node-metrics", args=[node.pk])
    assert client.get(url, {"range": "24h"}).status_code == 200
    assert client.get(url, {"range": "1y"}).status_code == 400


def test_accept_host_key_rejects_garbage(cast: Cast) -> None:
    node = make_node(cast.ministry)
    url = reverse("node-accept-host-key", args=[node.pk])
    response = token_client(cast.sub_admin).post(url, {"hostKey": "not a key"}, format="json")
    assert response.status_code == 400
