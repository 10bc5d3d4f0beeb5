"""Reading the office node's Collabora admin console password (operators only).

The password is kept encrypted and shown nowhere by default: not in lists, not in the
API. An operator reveals it on the node's page with a POST, and every reveal is audited
(who read which node's console password, never the password itself).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import Http404

from servers.models import Node
from tenants import permissions as perms
from ums import auditing
from ums.actions import require_in_scope, require_permission
from ums.operators import is_operator

from .models import OfficeConsole
from .state import ROLE


def reveal_console(*, actor: Any, node: Node) -> OfficeConsole:
    """The console credentials of ``node``, the read audited. ``Http404`` for anyone but
    an operator in scope, for a node without the office role and before the console was
    made (at the node's first converge)."""
    if not is_operator(actor):
        raise Http404
    require_in_scope(node, actor)
    require_permission(actor, perms.SERVERS_MANAGE)
    console = OfficeConsole.objects.filter(node=node).first()
    if ROLE not in (node.roles or ()) or console is None:
        raise Http404
    with transaction.atomic():
        auditing.record(
            "office_console.reveal",
            obj=node,
            actor=actor,
            extra={"username": console.username},
        )
    return console
