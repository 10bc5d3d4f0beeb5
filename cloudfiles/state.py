"""The Nextcloud part of a cloud files node's desired state (``DesiredState.extra``).

Registered in :data:`deploy.desired.STATE_BUILDERS`; runs after the mail part, so the
mailboxes' effective access (the ``files`` flag, inherited like every protocol) is already
resolved there. Two queries: the mailboxes' customers and the policies of the tree.
"""

from __future__ import annotations

from deploy.services.base import DesiredState
from deploy.services.nextcloud.data import Account, GroupPolicy, NextcloudData, group_id
from mail.models import Mailbox
from servers.models import Node
from tenants.models import Customer

from . import policy

ROLE = "cloudfiles"


def cloud_quota_mb(mailbox_quota_mb: int, policy_quota_mb: int) -> int:
    """A user's cloud quota: the customer's cloud quota per user when the tree sets one,
    else the mailbox's own quota (0 on both: no quota)."""
    return int(policy_quota_mb or mailbox_quota_mb or 0)


def add_nextcloud(node: Node, state: DesiredState) -> None:
    if ROLE not in (node.roles or ()):
        return
    rows = {
        email: (customer_id, customer_path, display_name)
        for email, customer_id, customer_path, display_name in Mailbox.objects.filter(
            customer_path__startswith=node.customer_path
        ).values_list("email", "customer_id", "customer_path", "display_name")
    }
    paths = {row[1] for row in rows.values()}
    customers = dict(Customer.objects.filter(path__in=paths).values_list("path", "name"))
    policies = {p: policy.values(f) for p, f in policy.effective_many(paths).items()}
    data = NextcloudData()
    for path, name in sorted(customers.items()):
        values = policies[path]
        customer_id = int([p for p in path.split("/") if p][-1])
        data.groups.append(
            GroupPolicy(
                group=group_id(customer_id),
                display_name=name,
                internal_shares=bool(values["internal_shares"]),
                external_links=bool(values["external_links"]),
                password_required=bool(values["password_required"]),
                expire_days=int(values["expire_days"] or 0),
            )
        )
    for mailbox in state.mailboxes:
        row = rows.get(mailbox.email)
        if row is None:
            continue
        customer_id, path, display_name = row
        data.accounts.append(
            Account(
                uid=mailbox.email,
                display_name=display_name or mailbox.email,
                group=group_id(customer_id),
                quota_mb=cloud_quota_mb(mailbox.quota_mb, policies[path]["quota_mb"]),
                files=bool(mailbox.protocols.get("files")),
                enabled=mailbox.enabled,
            )
        )
    from .usage import admitted  # imports this module's cloud_quota_mb

    data.over_limit = admitted(
        data.accounts, {email: row[1] for email, row in rows.items()}, node.customer_path
    )
    state.extra["nextcloud"] = data
