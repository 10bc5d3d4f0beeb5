"""The demo customer tree and its administrators.

The system creates the root customer and its administrator; that administrator then
builds the rest of the tree and the other administrators, as a provider would.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from tenants import actions
from tenants.models import Administrator, Customer

from .catalogue import ADMINS, ROOT, TREE, DemoAdmin


@dataclass(frozen=True)
class Login:
    username: str
    password: str
    home: str


@dataclass
class People:
    customers: dict[str, Customer]
    admins: dict[str, Administrator]
    created: list[Login]  # logins of administrators created by this run

    def actor(self, username: str) -> Administrator | None:
        """The demo administrator to act as, or None (the system) when they can no longer
        do what the demo does (disabled or stripped of permissions since)."""
        admin = self.admins.get(username)
        spec = next(a for a in ADMINS if a.username == username)
        if admin is None or not admin.is_active:
            return None
        if not set(spec.permissions) <= admin.permission_set():
            return None
        return admin


def new_password() -> str:
    """A random password that passes the administrator password rules."""
    return secrets.token_urlsafe(12)


def seed_people() -> People:
    """Create whatever is missing of the tree and the administrators; keep the rest."""
    people = People(customers={}, admins={}, created=[])
    root = _customer(ROOT, None, actor=None)
    people.customers[ROOT] = root
    _admin(people, ADMINS[0], actor=None)
    provider = people.actor(ADMINS[0].username)
    _subtree(TREE[ROOT], root, people, provider)
    for spec in ADMINS[1:]:
        _admin(people, spec, actor=provider)
    return people


def _customer(name: str, parent: Customer | None, actor: Administrator | None) -> Customer:
    customer = Customer.objects.filter(parent=parent, name=name).first()
    if customer is None:
        customer = actions.create_customer(actor=actor, name=name, parent=parent)
    return customer


def _subtree(tree: dict, parent: Customer, people: People, actor: Administrator | None) -> None:
    for name, children in tree.items():
        customer = _customer(name, parent, actor)
        people.customers[name] = customer
        _subtree(children, customer, people, actor)


def _admin(people: People, spec: DemoAdmin, actor: Administrator | None) -> None:
    admin = Administrator.objects.filter(username=spec.username).first()
    if admin is None:
        password = new_password()
        admin = actions.create_administrator(
            actor=actor,
            customer=people.customers[spec.home],
            username=spec.username,
            full_name=spec.full_name,
            email=f"{spec.username}@demo.invalid",
            password=password,
            permissions=list(spec.permissions),
        )
        people.created.append(Login(spec.username, password, spec.home))
    people.admins[spec.username] = admin
