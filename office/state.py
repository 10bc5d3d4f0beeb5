"""The Collabora part of an office node's desired state (``DesiredState.extra``).

Registered in :data:`deploy.desired.STATE_BUILDERS`. The admin console credentials are
made on the node's first build (a random password, kept encrypted) and reused after, so
coolwsd.xml renders the same on every converge.
"""

from __future__ import annotations

import secrets

from deploy.services.base import DesiredState
from deploy.services.collabora.config import CollaboraData
from servers.models import Node

from .models import OfficeConsole

ROLE = "office"


def console_for(node: Node) -> OfficeConsole:
    row = OfficeConsole.objects.filter(node=node).first()
    if row is None:
        row, _created = OfficeConsole.objects.get_or_create(
            node=node, defaults={"password": secrets.token_urlsafe(24)}
        )
    return row


def add_collabora(node: Node, state: DesiredState) -> None:
    if ROLE not in (node.roles or ()):
        return
    console = console_for(node)
    state.extra["collabora"] = CollaboraData(console.username, console.password)
