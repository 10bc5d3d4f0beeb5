"""Generic contract every scoped API endpoint must honour.

A test class per endpoint declares its data; :class:`ScopedEndpointContract` then checks:
unauthenticated callers are refused, an outsider gets 404 (read and write), an in-scope
administrator is allowed, out-of-scope objects never appear in lists, a write that would
move an object out of scope is refused and changes nothing, and writes leave an audit
record. ``COVERED`` records which route basenames have a contract, so the route walker
(test_route_coverage.py) fails when an endpoint escapes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from django.db import models
from rest_framework.test import APIClient

from audit.models import AuditRecord
from tests.fixtures import Cast, token_client

COVERED: set[str] = set()


@pytest.mark.django_db
class ScopedEndpointContract:
    basename: ClassVar[str]
    model: ClassVar[type[models.Model]]
    audit_prefix: ClassVar[str] = ""
    # The key under which an object appears in list results.
    list_key: ClassVar[str] = "id"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "basename" in cls.__dict__:
            COVERED.add(cls.basename)

    # --- data each endpoint declares -------------------------------------------------
    def make_in_scope(self, cast: Cast) -> models.Model:
        """An object inside sub_admin's subtree (Government and below)."""
        raise NotImplementedError

    def make_outside(self, cast: Cast) -> models.Model:
        """An object in the sibling subtree (ISP)."""
        raise NotImplementedError

    def create_payload(self, cast: Cast) -> dict | None:
        return None

    def update_payload(self, cast: Cast, obj: models.Model) -> dict | None:
        return None

    def escape_payload(self, cast: Cast, obj: models.Model) -> dict | None:
        """An update that would move the object out of sub_admin's scope."""
        return None

    can_delete: ClassVar[bool] = True

    # --- helpers ---------------------------------------------------------------------
    def list_url(self) -> str:
        from django.urls import reverse

        return reverse(f"{self.basename}-list")

    def detail_url(self, obj: models.Model) -> str:
        from django.urls import reverse

        return reverse(f"{self.basename}-detail", args=[obj.pk])

    def client_for(self, admin: Any) -> APIClient:
        return token_client(admin)

    def audit_count(self) -> int:
        return AuditRecord.objects.filter(action__startswith=self.audit_prefix).count()

    # --- the contract ----------------------------------------------------------------
    def test_unauthenticated_is_refused(self, cast: Cast) -> None:
        obj = self.make_in_scope(cast)
        client = APIClient()
        assert client.get(self.list_url()).status_code == 401
        assert client.get(self.detail_url(obj)).status_code == 401
        bad = APIClient()
        bad.credentials(HTTP_AUTHORIZATION="Bearer ums_000000000000_forged")
        assert bad.get(self.list_url()).status_code == 401

    def test_outsider_gets_404(self, cast: Cast) -> None:
        obj = self.make_in_scope(cast)
        outsider = self.client_for(cast.sibling_admin)
        assert outsider.get(self.detail_url(obj)).status_code == 404
        payload = self.update_payload(cast, obj)
        if payload is not None:
            assert outsider.patch(self.detail_url(obj), payload, format="json").status_code == 404
        if self.can_delete:
            assert outsider.delete(self.detail_url(obj)).status_code == 404
        assert type(obj)._default_manager.filter(pk=obj.pk).exists()

    def test_in_scope_is_allowed_and_lists_exclude_outside(self, cast: Cast) -> None:
        inside = self.make_in_scope(cast)
        outside = self.make_outside(cast)
        client = self.client_for(cast.sub_admin)
        assert client.get(self.detail_url(inside)).status_code == 200
        listed: set[Any] = set()
        url = self.list_url()
        while url:
            page = client.get(url).json()
            listed.update(row[self.list_key] for row in page["results"])
            url = page["next"]
        assert inside.pk in listed
        assert outside.pk not in listed

    def test_create_is_audited(self, cast: Cast) -> None:
        payload = self.create_payload(cast)
        if payload is None:
            return
        client = self.client_for(cast.sub_admin)
        before = self.audit_count()
        response = client.post(self.list_url(), payload, format="json")
        assert response.status_code == 201, response.content
        assert self.audit_count() == before + 1
        record = AuditRecord.objects.order_by("-seq").first()
        assert record.actor_id == cast.sub_admin.pk
        assert record.channel == "api"
        assert record.customer_path.startswith(cast.government.path)

    def test_update_is_audited(self, cast: Cast) -> None:
        obj = self.make_in_scope(cast)
        payload = self.update_payload(cast, obj)
        if payload is None:
            return
        client = self.client_for(cast.sub_admin)
        before = self.audit_count()
        response = client.patch(self.detail_url(obj), payload, format="json")
        assert response.status_code == 200, response.content
        assert self.audit_count() == before + 1

    def test_write_that_escapes_scope_is_refused(self, cast: Cast) -> None:
        obj = self.make_in_scope(cast)
        payload = self.escape_payload(cast, obj)
        if payload is None:
            return
        snapshot = {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}
        client = self.client_for(cast.sub_admin)
        before = self.audit_count()
        response = client.patch(self.detail_url(obj), payload, format="json")
        assert response.status_code in (400, 404), response.content
        obj.refresh_from_db()
        assert {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields} == snapshot
        assert self.audit_count() == before

    def test_delete_by_insider_is_audited(self, cast: Cast) -> None:
        if not self.can_delete:
            return
        obj = self.make_in_scope(cast)
        client = self.client_for(cast.sub_admin)
        before = self.audit_count()
        response = client.delete(self.detail_url(obj))
        assert response.status_code == 204, response.content
        assert self.audit_count() == before + 1
