"""The cast every test builds on.

Tree::

    Provider                       <- root_admin (every permission)
    ├── Government                 <- sub_admin (every permission)
    │   └── Ministry               <- ministry_viewer (view permissions only)
    │       └── Department
    └── ISP                        <- sibling_admin (every permission)
        └── Shop

``sub_admin`` is the administrator under test; ``sibling_admin`` is the outsider who must
get 404 for anything under Government.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from tenants import actions
from tenants import permissions as perms
from tenants.models import Administrator, Customer

PASSWORD = "Quartz-Lantern-Meadow-42"
VIEW_ONLY = [code for code in perms.ALL if code.endswith(".view")]


@dataclass
class Cast:
    provider: Customer
    government: Customer
    ministry: Customer
    department: Customer
    isp: Customer
    shop: Customer
    root_admin: Administrator
    sub_admin: Administrator
    ministry_viewer: Administrator
    sibling_admin: Administrator


def make_admin(
    customer: Customer, username: str, codes: list[str] | tuple[str, ...]
) -> Administrator:
    return actions.create_administrator(
        actor=None,
        customer=customer,
        username=username,
        full_name=username.replace(".", " ").title(),
        email=f"{username}@example.org",
        password=PASSWORD,
        permissions=list(codes),
    )


def build_cast() -> Cast:
    provider = actions.create_customer(actor=None, name="Provider", parent=None)
    government = actions.create_customer(actor=None, name="Government", parent=provider)
    ministry = actions.create_customer(actor=None, name="Ministry", parent=government)
    department = actions.create_customer(actor=None, name="Department", parent=ministry)
    isp = actions.create_customer(actor=None, name="ISP", parent=provider)
    shop = actions.create_customer(actor=None, name="Shop", parent=isp)
    return Cast(
        provider=provider,
        government=government,
        ministry=ministry,
        department=department,
        isp=isp,
        shop=shop,
        root_admin=make_admin(provider, "root.admin", perms.ALL),
        sub_admin=make_admin(government, "sub.admin", perms.ALL),
        ministry_viewer=make_admin(ministry, "ministry.viewer", VIEW_ONLY),
        sibling_admin=make_admin(isp, "sibling.admin", perms.ALL),
    )


@pytest.fixture
def cast(db: Any) -> Cast:
    return build_cast()


def token_client(admin: Administrator, *, read_only: bool = False) -> APIClient:
    """An API client authenticated with a real token of ``admin``."""
    owner_perms = admin.permissions
    if perms.TOKENS_MANAGE not in owner_perms:
        # Tokens need tokens.manage to be created; grant it for the fixture only.
        Administrator.objects.filter(pk=admin.pk).update(
            permissions=[*owner_perms, perms.TOKENS_MANAGE]
        )
        admin.refresh_from_db()
    _token, secret = actions.create_token(actor=admin, name="test", read_only=read_only)
    if perms.TOKENS_MANAGE not in owner_perms:
        Administrator.objects.filter(pk=admin.pk).update(permissions=owner_perms)
        admin.refresh_from_db()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def api(cast: Cast) -> Any:
    """``api(admin)`` returns a token-authenticated client for that administrator."""
    return token_client
