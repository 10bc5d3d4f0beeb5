"""Everything the system keeps that can hold a mailbox's messages, for permanent deletion.

``manage.py purge_mailbox --permanent`` (issue 13, item 8) must leave no retrievable copy:
it asks every registered :class:`CopyHolder` what it keeps of the mailbox (local ZFS
snapshots, off-node copies on the backup node or on targets, exports), shows the list,
including the other mailboxes that go with a shared copy, then destroys or rewrites each.
A new kind of copy registers its holder here (in its app's ``ready()``), or purge would
silently leave it behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mail.models import Domain


@dataclass
class HeldCopy:
    """One thing that holds (some of) the mailbox's messages."""

    holder: str  # the CopyHolder.name that found it
    description: str  # for the listing before confirmation: "snapshot tank/mail/x@..."
    #: Whether destroying it takes other data with it (a snapshot of the whole domain):
    #: what else goes, for the confirmation listing ("all mailboxes of example.org").
    also_removes: list[str] = field(default_factory=list)
    ref: Any = None  # the holder's own handle


class CopyHolder(Protocol):
    name: str

    def find(self, domain: Domain, local_part: str | None) -> list[HeldCopy]:
        """What holds messages of ``local_part``@``domain`` (the whole domain when None)."""

    def destroy(
        self, copy: HeldCopy, domain: Domain, local_part: str | None, log: Callable[[str], None]
    ) -> None:
        """Destroy ``copy``, or rewrite it without the mailbox; idempotent."""


_HOLDERS: dict[str, CopyHolder] = {}


def register(holder: CopyHolder) -> None:
    _HOLDERS[holder.name] = holder


def holders() -> list[CopyHolder]:
    return list(_HOLDERS.values())
