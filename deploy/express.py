"""The express step: a new mailbox's address accepted before the converge renders.

A converge of an SMTP node with 100,000 mailboxes takes seconds (the whole desired state
is built and rendered to find the one new line). Before that, the converge job of a
relaying SMTP node inserts the entries of the mailboxes created since its last converge
began (noted by :func:`deploy.dirty.remember_new_mailboxes`) straight into the live
recipient tables: rendered by the same renderer from a state holding only those
mailboxes, added with ``postmap -i``, looked up again. The converge then runs as always,
and its incremental path diffs against what the tables hold, so it keeps the entries or
removes them (a mailbox deleted meanwhile). Both run in one job under the node's converge
lock, so nothing else writes the tables in between.

Only relaying nodes: a node that delivers must not accept mail before its delivery agent
knows the mailbox (the same rule as :meth:`~deploy.services.base.Service.goes_live_alone`).
A relaying node's mail for a mailbox its IMAP node does not know yet is deferred, never
bounced (the ``ums-imap`` transport). Any failure here is logged and left to the converge.
"""

from __future__ import annotations

from collections.abc import Callable

from django.utils.translation import gettext_noop

from servers.models import Node
from ums.joblog import log_entry

from . import desired
from .connector.base import ConnectorError
from .nodes import session
from .services.base import CheckFailed
from .services.postfix import PostfixService


def add_new_recipients(node: Node, mailbox_ids: list[int], log: Callable[[str], None]) -> int:
    """Insert the express entries of ``mailbox_ids`` on ``node``; the number added."""
    from .converge import applicable_services

    if not mailbox_ids:
        return 0
    state = desired.build(node, mailbox_ids=mailbox_ids)
    postfix = next((s for s in applicable_services(state) if s.name == "postfix"), None)
    if not isinstance(postfix, PostfixService) or not postfix.may_go_live_alone(state):
        return 0
    if not state.mailboxes:  # deleted again, or outside the node's tree
        return 0
    entries = postfix.express_entries(state)
    if not entries:
        return 0
    try:
        with session(node) as conn:
            added = postfix.add_express_entries(conn, entries)
    except (ConnectorError, CheckFailed) as exc:
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
        log(
            log_entry(
                gettext_noop("express: not taken (%(reason)s); the converge adds them"),
                reason=reason,
            )
        )
        return 0
    log(
        log_entry(
            gettext_noop(
                "express: %(count)s entry for %(mailboxes)s new mailbox(es) live in %(maps)s"
            )
            if added == 1
            else gettext_noop(
                "express: %(count)s entries for %(mailboxes)s new mailbox(es) live in %(maps)s"
            ),
            count=added,
            mailboxes=len(state.mailboxes),
            maps=", ".join(sorted(entries)),
        )
    )
    return added
