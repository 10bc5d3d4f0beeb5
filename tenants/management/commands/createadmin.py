"""``manage.py createadmin``: the first root customer and its administrator (production).

Interactive by default; for automation every value comes from a flag or the environment
(``UMS_ADMIN_USERNAME``, ``UMS_ADMIN_PASSWORD``, ...) with ``--no-input``. The password
goes through the same validators as the portal (the messages are printed, nothing is
created). A username that exists is an error that changes nothing, so running it twice in a
deployment script is safe. The root customer is reused when one of that name exists.
"""

from __future__ import annotations

import getpass
import os
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from tenants import actions
from tenants import permissions as perms
from tenants.models import Administrator, Customer
from ums import context

# flag -> (environment variable, prompt)
FIELDS = {
    "customer": ("UMS_ADMIN_CUSTOMER", "Root customer name"),
    "username": ("UMS_ADMIN_USERNAME", "Username"),
    "full_name": ("UMS_ADMIN_FULL_NAME", "Full name"),
    "email": ("UMS_ADMIN_EMAIL", "Email"),
}
PASSWORD_ENV = "UMS_ADMIN_PASSWORD"  # noqa: S105 (a variable name, not a secret)


def _messages(exc: ValidationError) -> list[str]:
    if hasattr(exc, "error_dict"):
        return [f"{field}: {msg}" for field, msgs in exc.message_dict.items() for msg in msgs]
    return list(exc.messages)


class Command(BaseCommand):
    help = "Create the first root customer and an administrator with every permission."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--customer", help=f"root customer name (${FIELDS['customer'][0]})")
        parser.add_argument("--username", help=f"(${FIELDS['username'][0]})")
        parser.add_argument("--full-name", dest="full_name", help=f"(${FIELDS['full_name'][0]})")
        parser.add_argument("--email", help=f"(${FIELDS['email'][0]})")
        parser.add_argument(
            "--no-input",
            action="store_false",
            dest="interactive",
            help=f"never prompt; the password comes from ${PASSWORD_ENV}",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        interactive = options["interactive"]
        values: dict[str, str] = {}
        for name, (env, prompt) in FIELDS.items():
            value = (options.get(name) or os.environ.get(env) or "").strip()
            if not value and interactive:
                value = input(f"{prompt}: ").strip()
            if not value and name != "full_name":
                raise CommandError(f"{prompt} is required (--{name.replace('_', '-')} or ${env})")
            values[name] = value
        if Administrator.objects.filter(username__iexact=values["username"]).exists():
            raise CommandError(
                f"An administrator named {values['username']!r} already exists; nothing changed."
            )
        password = os.environ.get(PASSWORD_ENV, "")
        if not password and interactive:
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("The passwords differ; nothing changed.")
        if not password:
            raise CommandError(f"A password is required (${PASSWORD_ENV} with --no-input)")
        try:
            with context.acting(channel=context.CHANNEL_CLI), transaction.atomic():
                customer = Customer.objects.filter(parent=None, name=values["customer"]).first()
                if customer is None:
                    customer = actions.create_customer(
                        actor=None, name=values["customer"], parent=None
                    )
                admin = actions.create_administrator(
                    actor=None,
                    customer=customer,
                    username=values["username"],
                    full_name=values["full_name"] or values["username"],
                    email=values["email"],
                    password=password,
                    permissions=list(perms.ALL),
                )
        except ValidationError as exc:
            raise CommandError(
                "Nothing was created:\n" + "\n".join(f"  {m}" for m in _messages(exc))
            ) from None
        self.stdout.write(
            f"Created administrator {admin.username!r} at root customer {customer.name!r} "
            "with every permission. Log in to the portal and set up the second factor."
        )
