"""Administrators in the portal: list, create, edit, password, delete, and escalation refused."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from tenants import permissions as perms
from tenants.models import Administrator
from tests.fixtures import PASSWORD, Cast, make_admin
from tests.portal.conftest import form_errors

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "Velvet-Harbour-Compass-77"


def new_admin_data(cast: Cast, **overrides: Any) -> dict[str, Any]:
    data = {
        "username": "archive.admin",
        "full_name": "Archive Admin",
        "email": "archive@example.org",
        "customer": cast.ministry.pk,
        "password": NEW_PASSWORD,
        "password_confirm": NEW_PASSWORD,
        "permissions": [perms.CUSTOMERS_VIEW, perms.AUDIT_VIEW],
        "is_active": "on",
    }
    data.update(overrides)
    return data


@pytest.fixture
def limited_admin(cast: Cast) -> Administrator:
    """At Government, may manage customers and administrators, but holds nothing else."""
    return make_admin(
        cast.government,
        "limited.admin",
        [
            perms.CUSTOMERS_VIEW,
            perms.CUSTOMERS_MANAGE,
            perms.ADMINISTRATORS_VIEW,
            perms.ADMINISTRATORS_MANAGE,
        ],
    )


def test_list_is_scoped_and_searchable(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    names = {
        a.username for a in client.get(reverse("tenants:administrator-list")).context["object_list"]
    }
    assert names == {"sub.admin", "ministry.viewer"}
    found = client.get(reverse("tenants:administrator-list"), {"q": "viewer"})
    assert [a.username for a in found.context["object_list"]] == ["ministry.viewer"]
    at_ministry = client.get(reverse("tenants:administrator-list"), {"customer": cast.ministry.pk})
    assert [a.username for a in at_ministry.context["object_list"]] == ["ministry.viewer"]


def test_create_administrator_with_grouped_permissions(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    page = client.get(reverse("tenants:administrator-create") + f"?customer={cast.ministry.pk}")
    groups = [str(area) for area, _boxes in page.context["form"].permission_groups()]
    assert groups == [
        "Customers",
        "Administrators",
        "Mail",
        "Servers",
        "Spam hold",
        "Audit",
        "API tokens",
    ]
    assert page.context["form"]["customer"].value() == cast.ministry.pk
    response = client.post(reverse("tenants:administrator-create"), new_admin_data(cast))
    admin = Administrator.objects.get(username="archive.admin")
    assert response.status_code == 302
    assert response["Location"] == reverse("tenants:administrator-detail", args=[admin.pk])
    assert admin.customer_id == cast.ministry.pk
    assert admin.permissions == [perms.CUSTOMERS_VIEW, perms.AUDIT_VIEW]
    assert admin.check_password(NEW_PASSWORD)
    assert AuditRecord.objects.filter(
        action="administrator.create", object_id=str(admin.pk), actor_id=cast.sub_admin.pk
    ).exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"username": "bad name"}, "username"),
        ({"username": "u" * 151}, "username"),
        ({"full_name": "Tab\there"}, "full_name"),
        ({"email": "not-an-email"}, "email"),
        ({"password": "short", "password_confirm": "short"}, "password"),
        ({"password_confirm": "Something-Else-123"}, "password_confirm"),
        ({"username": "SUB.ADMIN"}, "username"),
        ({"permissions": ["no.such.permission"]}, "permissions"),
        ({"customer": "abc"}, "customer"),
        ({"customer": "9" * 30}, "customer"),
    ],
)
def test_bad_administrator_input_changes_nothing(
    cast: Cast, login: Any, overrides: dict[str, Any], field: str
) -> None:
    before = Administrator.objects.count()
    response = login(cast.sub_admin).post(
        reverse("tenants:administrator-create"), new_admin_data(cast, **overrides)
    )
    assert response.status_code == 200
    assert field in form_errors(response), form_errors(response)
    assert Administrator.objects.count() == before


def test_cannot_grant_a_permission_one_lacks(
    cast: Cast, login: Any, limited_admin: Administrator
) -> None:
    client = login(limited_admin)
    form = client.get(reverse("tenants:administrator-create")).context["form"]
    offered = {code for code, _label in form.fields["permissions"].choices}
    assert offered == set(limited_admin.permissions)
    response = client.post(
        reverse("tenants:administrator-create"),
        new_admin_data(cast, permissions=[perms.CUSTOMERS_VIEW, perms.SERVERS_MANAGE]),
    )
    assert "permissions" in form_errors(response)
    assert not Administrator.objects.filter(username="archive.admin").exists()


def test_cannot_create_an_administrator_above_or_beside(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    for customer in (cast.provider, cast.isp):
        response = client.post(
            reverse("tenants:administrator-create"), new_admin_data(cast, customer=customer.pk)
        )
        assert "customer" in form_errors(response)
    assert not Administrator.objects.filter(username="archive.admin").exists()


def test_cannot_touch_an_administrator_above(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    root = cast.root_admin
    for name in ("edit", "password", "delete"):
        url = reverse(f"tenants:administrator-{name}", args=[root.pk])
        assert client.get(url).status_code == 404
        assert client.post(url, {"password": "x", "password_confirm": "x"}).status_code == 404
    root.refresh_from_db()
    assert root.check_password(PASSWORD)


def test_cannot_change_a_more_powerful_administrator_in_scope(
    cast: Cast, login: Any, limited_admin: Administrator
) -> None:
    client = login(limited_admin)
    target = cast.ministry_viewer  # holds mail.view, servers.view... that limited_admin lacks
    page = client.get(reverse("tenants:administrator-edit", args=[target.pk]))
    assert "you cannot change them" in page.content.decode()
    response = client.post(
        reverse("tenants:administrator-password", args=[target.pk]),
        {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
    )
    assert response.status_code == 200
    assert any("you cannot change them" in e for e in form_errors(response)["__all__"])
    response = client.post(reverse("tenants:administrator-delete", args=[target.pk]))
    assert response.status_code == 200
    target.refresh_from_db()
    assert target.check_password(PASSWORD)


def test_cannot_raise_own_permissions(cast: Cast, login: Any, limited_admin: Administrator) -> None:
    client = login(limited_admin)
    response = client.post(
        reverse("tenants:administrator-edit", args=[limited_admin.pk]),
        {
            "full_name": "Limited",
            "email": "limited@example.org",
            "customer": cast.government.pk,
            "permissions": [*limited_admin.permissions, perms.AUDIT_VIEW],
            "is_active": "on",
        },
    )
    assert "permissions" in form_errors(response)
    limited_admin.refresh_from_db()
    assert perms.AUDIT_VIEW not in limited_admin.permissions


def test_edit_and_move_an_administrator(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    target = cast.ministry_viewer
    response = client.post(
        reverse("tenants:administrator-edit", args=[target.pk]),
        {
            "full_name": "Department Viewer",
            "email": "viewer@example.org",
            "customer": cast.department.pk,
            "permissions": [perms.CUSTOMERS_VIEW],
        },
    )
    assert response.status_code == 302
    target.refresh_from_db()
    assert (target.full_name, target.customer_id, target.is_active) == (
        "Department Viewer",
        cast.department.pk,
        False,
    )
    assert target.customer_path == cast.department.path
    assert target.permissions == [perms.CUSTOMERS_VIEW]


def test_set_password_and_delete(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    target = cast.ministry_viewer
    response = client.post(
        reverse("tenants:administrator-password", args=[target.pk]),
        {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
    )
    assert response.status_code == 302
    target.refresh_from_db()
    assert target.check_password(NEW_PASSWORD)
    confirm = client.get(reverse("tenants:administrator-delete", args=[target.pk]))
    assert "Delete administrator ministry.viewer?" in confirm.content.decode()
    response = client.post(reverse("tenants:administrator-delete", args=[target.pk]))
    assert response.status_code == 302
    assert not Administrator.objects.filter(pk=target.pk).exists()
    assert AuditRecord.objects.filter(
        action="administrator.delete", object_id=str(target.pk)
    ).exists()


def test_cannot_delete_oneself(cast: Cast, login: Any) -> None:
    response = login(cast.sub_admin).post(
        reverse("tenants:administrator-delete", args=[cast.sub_admin.pk])
    )
    assert response.status_code == 200
    assert Administrator.objects.filter(pk=cast.sub_admin.pk).exists()
