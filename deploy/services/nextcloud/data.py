"""Plain data the Nextcloud service renders from (built by the cloudfiles app's state hook).

``deploy`` may not import the ``cloudfiles`` app; the app fills
``DesiredState.extra["nextcloud"]`` with a :class:`NextcloudData` through
:data:`deploy.desired.STATE_BUILDERS`, and the service reads only this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Nextcloud user ids allow letters, digits, spaces and ``_.@-'``; UMS uses the mailbox
#: address (an IDNA domain is ASCII) and leaves out the space and the quote. The first
#: character is a letter or digit: occ would read a leading "-" as an option.
UID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
#: Group ids UMS owns: one per customer. A user in one of them is UMS's to manage.
GROUP_PREFIX = "ums-c"
GROUP_RE = re.compile(r"^ums-c[0-9]{1,12}$")


def group_id(customer_id: int) -> str:
    return f"{GROUP_PREFIX}{int(customer_id)}"


@dataclass(frozen=True)
class Account:
    """One mailbox of the node's tree, whether or not it has cloud files."""

    uid: str  # the mailbox address
    display_name: str
    group: str  # its customer's group
    quota_mb: int  # 0: no quota
    #: The mailbox exists with the files flag on: an account should exist.
    files: bool
    #: The mailbox is enabled: an existing account is enabled only when both hold.
    enabled: bool


@dataclass(frozen=True)
class GroupPolicy:
    """A customer's effective share policy (inherited down the tree)."""

    group: str
    display_name: str
    internal_shares: bool
    external_links: bool
    password_required: bool
    expire_days: int  # 0: links do not expire by policy


@dataclass
class NextcloudData:
    accounts: list[Account] = field(default_factory=list)
    groups: list[GroupPolicy] = field(default_factory=list)
    #: Mailboxes with cloud files left without an account: their subtree's cloud files
    #: limit is reached (shown in the converge report).
    over_limit: list[str] = field(default_factory=list)
