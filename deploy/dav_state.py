"""The CalDAV/CardDAV part of a cloud-files node's desired state: one group per customer.

A customer that owns domains is a group: the mailboxes of its own domains read its
global address book (every entry of its subtree, as ``mail.addressbook`` exports it:
the same vCards the portal and the API serve), and those allowed the ``dav_sharing``
policy flag share their calendar read-only with the others of the group. Two queries
plus one export per customer.
"""

from __future__ import annotations

from collections import defaultdict

from mail import addressbook
from mail.models import Domain
from tenants.models import Customer

from .services.base import DavGroupData, MailboxData


def groups(scope: str, mailboxes: list[MailboxData]) -> list[DavGroupData]:
    """The groups of the customers inside ``scope`` (a customer path) that own domains."""
    by_customer: dict[int, list[str]] = defaultdict(list)
    for name, customer_id in (
        Domain.objects.filter(customer_path__startswith=scope, is_enabled=True)
        .order_by("name")
        .values_list("name", "customer_id")
    ):
        by_customer[customer_id].append(name)
    owner = {name: cid for cid, names in by_customer.items() for name in names}
    sharers: dict[int, list[str]] = defaultdict(list)
    for m in mailboxes:
        cid = owner.get(m.domain)
        if (
            cid is not None
            and m.enabled
            and m.protocols.get("dav")
            and m.protocols.get("dav_sharing")
        ):
            sharers[cid].append(m.email)
    result = []
    for customer in Customer.objects.filter(pk__in=list(by_customer)).order_by("pk"):
        result.append(
            DavGroupData(
                customer_id=customer.pk,
                name=customer.name,
                domains=tuple(by_customer[customer.pk]),
                vcards="".join(addressbook.export(customer)),
                calendar_sharers=tuple(sharers[customer.pk]),
            )
        )
    return result
