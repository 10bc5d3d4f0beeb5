"""The office node's Collabora admin console password: revealed to operators only, on the
node's page, by an audited POST; never in node lists, never in the API."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.models import AuditRecord
from office.models import OfficeConsole
from servers.models import Node, NodeStatus
from tenants import permissions as perms
from tests.fixtures import PASSWORD, Cast, make_admin, token_client

pytestmark = pytest.mark.django_db

SECRET = "console-Secret-4711-xyz"


def _portal(admin) -> Client:
    client = Client()
    assert client.login(username=admin.username, password=PASSWORD)
    return client


def _office_node(cast: Cast, roles: list[str] | None = None, name: str = "office1") -> Node:
    from servers import actions as server_actions

    zone = server_actions.create_zone(actor=None, customer=cast.government, name=f"Z-{name}")
    node = Node.objects.create(
        customer=cast.government,
        customer_path=cast.government.path,
        zone=zone,
        hostname=f"{name}.example.org",
        ssh_address="192.0.2.50",
        status=NodeStatus.ACTIVE,
        roles=roles or ["office"],
    )
    OfficeConsole.objects.create(node=node, password=SECRET)
    return node


def test_operators_reveal_the_console_password_by_an_audited_post(cast: Cast) -> None:
    node = _office_node(cast)
    web = _portal(cast.root_admin)
    url = f"/servers/nodes/{node.pk}/office-console/"
    page = web.get(f"/servers/nodes/{node.pk}/").content.decode()
    assert url in page and "Reveal" in page and SECRET not in page
    assert SECRET not in web.get("/servers/").content.decode()
    assert web.get(url).status_code == 405  # a read of a secret is never a GET
    assert not AuditRecord.objects.filter(action="office_console.reveal").exists()
    response = web.post(url)
    assert response.status_code == 200
    assert SECRET in response.content.decode() and "ums-admin" in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    record = AuditRecord.objects.get(action="office_console.reveal")
    assert record.actor_id == cast.root_admin.pk and record.object_id == str(node.pk)
    assert SECRET not in str(record.changes)  # who read it, never the password
    # The API shows the node without the password.
    api = token_client(cast.root_admin)
    listed = api.get("/api/v1/nodes/").content.decode()
    detail = api.get(f"/api/v1/nodes/{node.pk}/")
    assert detail.status_code == 200 and SECRET not in detail.content.decode()
    assert SECRET not in listed


def test_non_operators_and_other_nodes_get_404(cast: Cast) -> None:
    node = _office_node(cast)
    url = f"/servers/nodes/{node.pk}/office-console/"
    # Government's administrator manages the node but is not an operator.
    web = _portal(cast.sub_admin)
    page = web.get(f"/servers/nodes/{node.pk}/").content.decode()
    assert url not in page and SECRET not in page
    assert web.post(url).status_code == 404
    assert _portal(cast.sibling_admin).post(url).status_code == 404
    # An operator who may only view servers: no button, no password.
    viewer = make_admin(cast.provider, "root.viewer", [perms.SERVERS_VIEW])
    web = _portal(viewer)
    assert url not in web.get(f"/servers/nodes/{node.pk}/").content.decode()
    assert web.post(url).status_code == 403
    # Not an office node (a console row left from an old role) or no such node: 404.
    imap = _office_node(cast, roles=["imap"], name="imap9")
    web = _portal(cast.root_admin)
    assert web.post(f"/servers/nodes/{imap.pk}/office-console/").status_code == 404
    assert "office-console" not in web.get(f"/servers/nodes/{imap.pk}/").content.decode()
    assert web.post("/servers/nodes/999999/office-console/").status_code == 404
    assert not AuditRecord.objects.filter(action="office_console.reveal").exists()
