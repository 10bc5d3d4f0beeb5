"""What the demo contains, as plain data: the tree, its administrators and its mail.

Names are fictional; domains use the ``.demo`` top-level domain, which is not delegated,
so nothing here can reach a real mail server. One domain is internationalised
(``талх.demo``, "bread" in Mongolian, stored as ``xn--…``). Who creates what is part of the
data: each administrator manages their own part of the tree, so the audit log shows
several people at work, as in a real installation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tenants import permissions as perms

ROOT = "RackCorp UMS"

TREE: dict[str, dict] = {
    ROOT: {
        "Government of Demoland": {
            "Ministry of Finance": {"Treasury Department": {}, "Tax Department": {}},
            "Ministry of Health": {"Hospitals Department": {}, "Public Health Department": {}},
        },
        "Demo ISP": {"Bakery Ltd": {}, "Garage Pty": {}},
    }
}


@dataclass(frozen=True)
class DemoAdmin:
    username: str
    full_name: str
    home: str
    permissions: tuple[str, ...]


ADMINS: tuple[DemoAdmin, ...] = (
    DemoAdmin("admin", "Provider Administrator", ROOT, perms.ALL),
    DemoAdmin("gov.it", "Government IT", "Government of Demoland", perms.ALL),
    DemoAdmin(
        "finance.it",
        "Finance IT",
        "Ministry of Finance",
        tuple(c for c in perms.ALL if c != perms.SPAMHOLD_READ_CONTENT),
    ),
    DemoAdmin("isp.admin", "ISP Administrator", "Demo ISP", perms.ALL),
)
ADMIN_USERNAMES = tuple(a.username for a in ADMINS)


@dataclass(frozen=True)
class DemoMailbox:
    local_part: str
    display_name: str
    quota_mb: int
    used_percent: int  # how full the demo shows it (a node reports the real figure later)
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoAlias:
    local_part: str
    targets: tuple[str, ...]  # local parts of the same domain, or full addresses
    name: str = ""
    group: bool = False


@dataclass(frozen=True)
class DemoDomain:
    name: str
    customer: str
    admin: str  # who creates it (and everything in it)
    description: str
    mailboxes: tuple[DemoMailbox, ...] = ()
    aliases: tuple[DemoAlias, ...] = ()
    domain_aliases: tuple[str, ...] = ()
    dkim: bool = False


DOMAINS: tuple[DemoDomain, ...] = (
    DemoDomain(
        "demoland.demo",
        "Government of Demoland",
        "gov.it",
        "Government of Demoland: central offices",
        mailboxes=(
            DemoMailbox("alice", "Alice Batbayar", 2048, 46),
            DemoMailbox("bob", "Bob Dorj", 1024, 91),
            DemoMailbox("press", "Press Office", 5120, 12, {"hide_from_address_book": True}),
        ),
        aliases=(
            DemoAlias("info", ("press",), "Public enquiries"),
            DemoAlias("all-staff", ("alice", "bob", "press"), "All staff", group=True),
        ),
        domain_aliases=("gov-demoland.demo",),
        dkim=True,
    ),
    DemoDomain(
        "finance.demoland.demo",
        "Ministry of Finance",
        "finance.it",
        "Ministry of Finance",
        mailboxes=(
            DemoMailbox("treasurer", "Treasurer", 4096, 63),
            DemoMailbox("tax.office", "Tax Office", 2048, 97, {"retention_days": 3650}),
        ),
        aliases=(DemoAlias("budget", ("treasurer", "tax.office"), "Budget team", group=True),),
    ),
    DemoDomain(
        "health.demoland.demo",
        "Ministry of Health",
        "gov.it",
        "Ministry of Health",
        mailboxes=(DemoMailbox("minister", "Minister of Health", 2048, 28),),
    ),
    DemoDomain(
        "isp.demo",
        "Demo ISP",
        "isp.admin",
        "Demo ISP: support and operations",
        mailboxes=(
            DemoMailbox("support", "Customer Support", 2048, 55),
            DemoMailbox("noc", "Network Operations", 1024, 8),
        ),
        aliases=(DemoAlias("helpdesk", ("support", "noc"), "Helpdesk", group=True),),
    ),
    DemoDomain(
        "талх.demo",
        "Bakery Ltd",
        "isp.admin",
        "Bakery Ltd (an internationalised domain)",
        mailboxes=(
            DemoMailbox("orders", "Orders", 1024, 71),
            DemoMailbox(
                "baker", "Head Baker", 512, 34, {"forward_to": ["owner@bakery-owner.demo"]}
            ),
        ),
        aliases=(DemoAlias("sales", ("orders",), "Sales"),),
    ),
    # Its mailboxes come from the demo CSV import (see csv_demo), not from here.
    DemoDomain("garage.demo", "Garage Pty", "isp.admin", "Garage Pty"),
)

# An out-of-office reply (mailbox address, subject, body).
AUTORESPONDER = (
    "bob@demoland.demo",
    "Out of office until Monday",
    "Thank you for your message. I am away and will answer on Monday.\n"
    "For urgent matters write to info@demoland.demo.\n",
)

# A filter built in the portal's rule editor, on alice@demoland.demo.
SIEVE_MAILBOX = "alice@demoland.demo"
SIEVE_NAME = "Sort newsletters and reports"
SIEVE_RULES: list[dict[str, Any]] = [
    {
        "name": "Newsletters",
        "match": "any",
        "conditions": [
            {"field": "from", "op": "contains", "value": "newsletter"},
            {"field": "header", "header": "List-Id", "op": "matches", "value": "*"},
        ],
        "actions": [{"type": "fileinto", "folder": "Newsletters"}, {"type": "stop"}],
    },
    {
        "name": "Monthly reports",
        "match": "all",
        "conditions": [{"field": "subject", "op": "contains", "value": "monthly report"}],
        "actions": [{"type": "fileinto", "folder": "Reports"}, {"type": "mark_read"}],
    },
]

# The CSV an ISP administrator imports for Garage Pty (passwords are generated).
CSV_DOMAIN = "garage.demo"
CSV_MAILBOXES = (
    ("mechanic", "Head Mechanic", 1024),
    ("frontdesk", "Front Desk", 1024),
    ("parts", "Parts Department", 512),
    ("accounts", "Accounts", 512),
)
CSV_ALIASES = (("service", "group", "mechanic frontdesk"), ("invoices", "alias", "accounts"))
