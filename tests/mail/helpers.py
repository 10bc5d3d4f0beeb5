"""Mail objects for tests, created through the actions as the system."""

from __future__ import annotations

from typing import Any

from mail import actions
from mail.models import Alias, Domain, Mailbox
from tenants.models import Customer

MAILBOX_PASSWORD = "Harbour-Violet-Orbit-73"


def make_domain(customer: Customer, name: str, **fields: Any) -> Domain:
    return actions.create_domain(
        actor=None, customer=customer, name=name, contact_email="hostmaster@example.net", **fields
    )


def make_mailbox(domain: Domain, local_part: str, **fields: Any) -> Mailbox:
    fields.setdefault("password", MAILBOX_PASSWORD)
    return actions.create_mailbox(actor=None, domain=domain, local_part=local_part, **fields)


def make_alias(domain: Domain, local_part: str, targets: list[str], **fields: Any) -> Alias:
    return actions.create_alias(
        actor=None, domain=domain, local_part=local_part, targets=targets, **fields
    )
