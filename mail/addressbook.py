"""The global address book of an organisation: its mailboxes and groups, and vCard 4 export.

An organisation is a virtual customer; its address book holds every enabled mailbox and
distribution group of its subtree not hidden from the address book. Entries are ordered by
address (unique across mailboxes and aliases, since an address is one or the other) and
paged by keyset: one query per kind per page, whatever the size of the organisation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from django.db import models

from tenants.models import Customer

from . import choices
from .models import Alias, Mailbox


@dataclass
class Entry:
    kind: str  # "person" or "group"
    id: int
    email: str
    name: str
    members: list[str]


def _mailboxes(customer: Customer) -> models.QuerySet:
    return Mailbox.objects.filter(
        customer_path__startswith=customer.path, is_enabled=True, hide_from_address_book=False
    ).only("id", "email", "display_name")


def _groups(customer: Customer) -> models.QuerySet:
    return Alias.objects.filter(
        customer_path__startswith=customer.path,
        kind=choices.GROUP,
        is_enabled=True,
        hide_from_address_book=False,
    ).only("id", "email", "name", "targets")


def _entry(obj: Mailbox | Alias) -> Entry:
    if isinstance(obj, Mailbox):
        return Entry("person", obj.pk, obj.email, obj.display_name, [])
    return Entry("group", obj.pk, obj.email, obj.name, list(obj.targets or []))


def page(
    customer: Customer, *, after: str = "", size: int = 50, prefix: str = ""
) -> tuple[list[Entry], str | None]:
    """One page of entries with address > ``after``; returns (entries, next cursor)."""
    people = _mailboxes(customer)
    groups = _groups(customer)
    if prefix:
        people = people.filter(email__startswith=prefix)
        groups = groups.filter(email__startswith=prefix)
    if after:
        people = people.filter(email__gt=after)
        groups = groups.filter(email__gt=after)
    rows = list(people.order_by("email")[: size + 1]) + list(groups.order_by("email")[: size + 1])
    rows.sort(key=lambda r: r.email)
    entries = [_entry(r) for r in rows[:size]]
    next_cursor = entries[-1].email if len(rows) > size and entries else None
    return entries, next_cursor


def _escape(value: str) -> str:
    """vCard text value escaping (RFC 6350 section 3.4)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace(",", "\\,").replace(";", "\\;")


def _fold(line: str) -> str:
    """Fold lines longer than 75 octets (RFC 6350 section 3.2)."""
    data = line.encode("utf-8")
    if len(data) <= 75:
        return line + "\r\n"
    parts, current = [], b""
    for char in line:
        encoded = char.encode("utf-8")
        if len(current) + len(encoded) > (75 if not parts else 74):
            parts.append(current.decode("utf-8"))
            current = b""
        current += encoded
    parts.append(current.decode("utf-8"))
    return "\r\n ".join(parts) + "\r\n"


def vcard(entry: Entry) -> str:
    name = entry.name or entry.email.split("@", 1)[0]
    lines = [
        "BEGIN:VCARD",
        "VERSION:4.0",
        f"UID:urn:ums:{entry.kind}:{entry.id}",
        f"KIND:{'group' if entry.kind == 'group' else 'individual'}",
        f"FN:{_escape(name)}",
        f"EMAIL;TYPE=work:{_escape(entry.email)}",
    ]
    lines += [f"MEMBER:mailto:{_escape(member)}" for member in entry.members]
    lines.append("END:VCARD")
    return "".join(_fold(line) for line in lines)


def export(customer: Customer) -> Iterator[str]:
    """Every entry as vCard 4, streamed in address order (people, then groups)."""
    for mailbox in _mailboxes(customer).order_by("email").iterator(chunk_size=2000):
        yield vcard(_entry(mailbox))
    for group in _groups(customer).order_by("email").iterator(chunk_size=2000):
        yield vcard(_entry(group))
