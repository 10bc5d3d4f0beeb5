"""The webmail part of a node's desired state, read from the database.

Kept apart from :mod:`deploy.desired` (one job per module): a webmail node needs each
domain's product name and the global address book its users see, and the services may
not query the database themselves. The address book is :mod:`mail.addressbook`'s, so the
API, the vCard export and Roundcube show the same entries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

from django.conf import settings

from mail import addressbook
from mail.models import Domain, Mailbox
from tenants.models import Customer
from ums import crypto

from .services.base import WebmailData, WebmailDomain


def des_key() -> str:
    """Roundcube's ``des_key`` (24 characters), derived from the controller's secret.

    The same on every webmail node, so a session cookie encrypted on one decrypts on
    another, and stable across converges (a new key logs every user out).
    """
    digest = hmac.new(
        settings.SECRET_KEY.encode(), b"ums-roundcube-des-key", hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode("ascii")[:24]


def book(customer: Customer) -> list[dict[str, str]]:
    """The customer's global address book in address order, as Roundcube reads it."""
    entries: list[dict[str, str]] = []
    after: str = ""
    while True:
        page, after_next = addressbook.page(customer, after=after, size=2000)
        entries += [
            {"id": f"{e.kind[0]}{e.id}", "kind": e.kind, "email": e.email, "name": e.name}
            for e in page
        ]
        if not after_next:
            return entries
        after = after_next


def build(domains: Iterable[tuple[int, str, int, str]]) -> WebmailData:
    """Webmail data for ``(pk, name, customer_id, customer_path)`` domain rows.

    A domain's users see the address book of the customer that owns the domain (its
    whole subtree, as the API's address book of that customer).
    """
    rows = list(domains)
    names = dict(
        Domain.objects.filter(pk__in=[r[0] for r in rows]).values_list("pk", "webmail_name")
    )
    customers = {c.pk: c for c in Customer.objects.filter(pk__in={r[2] for r in rows})}
    data = WebmailData(product_name=settings.UMS_WEBMAIL_PRODUCT_NAME, des_key=des_key())
    for pk, name, customer_id, _path in rows:
        data.domains.append(WebmailDomain(name, names.get(pk) or "", customer_id))
    for customer_id, customer in sorted(customers.items()):
        data.books[customer_id] = book(customer)
    seeds = (
        Mailbox.objects.filter(domain_id__in=[r[0] for r in rows])
        .exclude(webmail_totp_secret="")
        .values_list("email", "webmail_totp_secret")
    )
    data.totp = {email: crypto.decrypt(token) for email, token in seeds}
    return data
