"""The permission catalogue: per area, what an administrator may do.

Permissions are plain codes kept on the administrator. An administrator can grant only
codes they hold themselves, so nobody can create someone more powerful than they are.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

CUSTOMERS_VIEW = "customers.view"
CUSTOMERS_MANAGE = "customers.manage"
ADMINISTRATORS_VIEW = "administrators.view"
ADMINISTRATORS_MANAGE = "administrators.manage"
MAIL_VIEW = "mail.view"
MAIL_MANAGE = "mail.manage"
SERVERS_VIEW = "servers.view"
SERVERS_MANAGE = "servers.manage"
SPAMHOLD_VIEW = "spamhold.view"
SPAMHOLD_READ_CONTENT = "spamhold.read_content"
SPAMHOLD_RELEASE = "spamhold.release"
SPAMHOLD_DELETE = "spamhold.delete"
AUDIT_VIEW = "audit.view"
TOKENS_MANAGE = "tokens.manage"

CATALOGUE: list[tuple[str, list[tuple[str, str]]]] = [
    (
        _("Customers"),
        [
            (CUSTOMERS_VIEW, _("View customers")),
            (CUSTOMERS_MANAGE, _("Create, change, move and delete customers")),
        ],
    ),
    (
        _("Administrators"),
        [
            (ADMINISTRATORS_VIEW, _("View administrators")),
            (ADMINISTRATORS_MANAGE, _("Create, change and delete administrators")),
        ],
    ),
    (
        _("Mail"),
        [
            (MAIL_VIEW, _("View domains and mailboxes")),
            (MAIL_MANAGE, _("Manage domains and mailboxes")),
        ],
    ),
    (
        _("Servers"),
        [
            (SERVERS_VIEW, _("View servers")),
            (SERVERS_MANAGE, _("Manage servers and run node actions")),
        ],
    ),
    (
        _("Spam hold"),
        [
            (SPAMHOLD_VIEW, _("View held message metadata")),
            (SPAMHOLD_READ_CONTENT, _("Read held message content")),
            (SPAMHOLD_RELEASE, _("Release held messages")),
            (SPAMHOLD_DELETE, _("Delete held messages")),
        ],
    ),
    (_("Audit"), [(AUDIT_VIEW, _("Search the audit log"))]),
    (_("API tokens"), [(TOKENS_MANAGE, _("Create and revoke own API tokens"))]),
]

ALL: tuple[str, ...] = (
    CUSTOMERS_VIEW,
    CUSTOMERS_MANAGE,
    ADMINISTRATORS_VIEW,
    ADMINISTRATORS_MANAGE,
    MAIL_VIEW,
    MAIL_MANAGE,
    SERVERS_VIEW,
    SERVERS_MANAGE,
    SPAMHOLD_VIEW,
    SPAMHOLD_READ_CONTENT,
    SPAMHOLD_RELEASE,
    SPAMHOLD_DELETE,
    AUDIT_VIEW,
    TOKENS_MANAGE,
)

LABELS: dict[str, str] = {code: label for _area, group in CATALOGUE for code, label in group}


def choices() -> list[tuple[str, str]]:
    return [(code, LABELS[code]) for code in ALL]


def normalise(codes: list[str] | tuple[str, ...] | set[str]) -> list[str]:
    """Known codes in catalogue order, without duplicates."""
    wanted = set(codes)
    unknown = wanted - set(ALL)
    if unknown:
        raise ValueError(f"unknown permissions: {', '.join(sorted(unknown))}")
    return [code for code in ALL if code in wanted]
