"""``GET /api/v1/`` lists the collections; the OpenAPI document groups operations by area."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.fixtures import Cast, token_client
from ums.api import schema

pytestmark = pytest.mark.django_db


def test_api_root_lists_collections_with_absolute_urls(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    response = client.get("/api/v1/")
    assert response.status_code == 200
    body = response.json()
    collections = body["collections"]
    for name in (
        "customers",
        "administrators",
        "mail/domains",
        "mail/mailboxes",
        "nodes",
        "jobs",
        "audit",
        "spamhold/messages",
    ):
        assert collections[name] == f"http://testserver/api/v1/{name}/", name
    assert body["docs"] == "http://testserver/api/docs/"
    assert body["schema"] == "http://testserver/api/schema/"
    # Every collection it names answers (none is a dead link); operator-only ones
    # (controller dumps) are not named for a tenant's administrator.
    for name, url in collections.items():
        assert client.get(url).status_code == 200, name
    assert "backup/dumps" not in collections


def test_api_root_names_operator_collections_for_operators(cast: Cast) -> None:
    client = token_client(cast.root_admin)
    collections = client.get("/api/v1/").json()["collections"]
    assert collections["backup/dumps"] == "http://testserver/api/v1/backup/dumps/"
    for name, url in collections.items():
        assert client.get(url).status_code == 200, name


def test_api_root_needs_a_login(cast: Cast) -> None:
    response = APIClient().get("/api/v1/")
    assert response.status_code in (401, 403)
    assert response["Content-Type"].startswith("application/json")


def test_schema_tags_group_operations_by_area(cast: Cast, login: Any) -> None:
    response = login(cast.root_admin).get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    document = response.json()
    tags = [t["name"] for t in document["tags"]]
    for area in (
        "customers",
        "administrators",
        "identity",
        "mail",
        "servers",
        "spam hold",
        "audit",
        "jobs",
    ):
        assert area in tags, area
    by_path = {
        path: {tag for op in ops.values() if isinstance(op, dict) for tag in op.get("tags", [])}
        for path, ops in document["paths"].items()
    }
    assert by_path["/api/v1/mail/mailboxes/"] == {"mail"}
    assert by_path["/api/v1/tokens/"] == {"identity"}
    assert by_path["/api/v1/spamhold/query/"] == {"spam hold"}
    assert by_path["/api/v1/nodes/"] == {"servers"}
    assert all(tags for tags in by_path.values())
    assert schema.area_of("/api/v1/unknown/") == schema.OTHER
