"""``manage.py seed_demo``: a demo customer tree and administrators at several levels.

Idempotent: existing demo customers are kept. Each run gives the demo administrators fresh
random passwords and prints them, so the printed logins always work.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from tenants import actions
from tenants import permissions as perms
from tenants.models import Administrator, Customer
from ums import context

TREE = {
    "RackCorp UMS": {
        "Government of Demoland": {
            "Ministry of Finance": {"Treasury Department": {}, "Tax Department": {}},
            "Ministry of Health": {"Hospitals Department": {}, "Public Health Department": {}},
        },
        "Demo ISP": {"Bakery Ltd": {}, "Garage Pty": {}},
    }
}

ADMINS = [
    # username, full name, home customer, permissions
    ("admin", "Provider Administrator", "RackCorp UMS", list(perms.ALL)),
    ("gov.it", "Government IT", "Government of Demoland", list(perms.ALL)),
    (
        "finance.it",
        "Finance IT",
        "Ministry of Finance",
        [c for c in perms.ALL if c != perms.SPAMHOLD_READ_CONTENT],
    ),
    ("isp.admin", "ISP Administrator", "Demo ISP", list(perms.ALL)),
]


class Command(BaseCommand):
    help = "Create the demo customer tree and administrators, and print their logins."

    def handle(self, *args: Any, **options: Any) -> None:
        with context.acting(channel=context.CHANNEL_CLI), transaction.atomic():
            by_name: dict[str, Customer] = {}
            self._create(TREE, None, by_name)
            logins = []
            for username, full_name, home, codes in ADMINS:
                password = secrets.token_urlsafe(12)
                admin = Administrator.objects.filter(username=username).first()
                if admin is None:
                    actions.create_administrator(
                        actor=None,
                        customer=by_name[home],
                        username=username,
                        full_name=full_name,
                        email=f"{username}@demo.invalid",
                        password=password,
                        permissions=codes,
                    )
                else:
                    actions.set_administrator_password(actor=None, admin=admin, password=password)
                logins.append((username, password, home))
        self.stdout.write("Demo administrators (passwords are new on every run):")
        for username, password, home in logins:
            self.stdout.write(f"  {username:<12} {password:<20} home customer: {home}")

    def _create(self, tree: dict, parent: Customer | None, by_name: dict[str, Customer]) -> None:
        for name, children in tree.items():
            customer = Customer.objects.filter(parent=parent, name=name).first()
            if customer is None:
                customer = actions.create_customer(actor=None, name=name, parent=parent)
            by_name[name] = customer
            self._create(children, customer, by_name)
