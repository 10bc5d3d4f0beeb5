"""What backups leave out: excluded domains, mailboxes and folders (issue 13, item 6).

This module is the one interface every kind of copy asks (snapshots, off-node copies,
dumps, listings). Paths are relative to the domain's folder on the mail store, the way a
Maildir tree lies under it: ``<local_part>/Maildir/...`` with Courier's Maildir++ folders
as ``.<Folder>`` and subfolders as ``.<Folder>.<Sub>``.

The policies themselves (customer, domain and mailbox levels, adding up down the tree)
live in :mod:`backup.exclusion_policy`; a list asks
:func:`backup.exclusion_policy.for_domains` (one query for all its domains) rather than
this function per row.

ZFS snapshots are per domain dataset; excluded mailboxes and folders are kept out of them
by living in the child dataset ``.ums-excluded`` (:mod:`backup.exclude_layout`).
``domain_excluded`` stops the scheduled snapshots and off-node copies of the domain; the
Maildir archive copies of :mod:`backup.offnode_archive` also call
:meth:`Exclusions.excludes_path` per entry (exports deliberately ignore exclusions).
"""

from __future__ import annotations

from dataclasses import dataclass

from mail.models import Domain


@dataclass(frozen=True)
class Exclusions:
    """The effective exclusions of one domain."""

    domain_excluded: bool = False
    mailboxes: frozenset[str] = frozenset()
    #: Maildir++ folder names without the leading dot ("Trash", "Junk"); a folder's
    #: subfolders ("Trash.Old") go with it.
    folders: frozenset[str] = frozenset()

    def mailbox_excluded(self, local_part: str) -> bool:
        return self.domain_excluded or local_part.lower() in self.mailboxes

    def folder_excluded(self, local_part: str, folder: str) -> bool:
        """``folder`` is a Maildir++ name without the dot; "" or "INBOX" is the inbox."""
        if self.mailbox_excluded(local_part):
            return True
        if folder in ("", "INBOX"):
            return False
        return any(folder == f or folder.startswith(f"{f}.") for f in self.folders)

    def excludes_path(self, relpath: str) -> bool:
        """Whether a file or folder at ``relpath`` (relative to the domain folder) is out."""
        parts = [p for p in relpath.split("/") if p]
        if not parts:
            return self.domain_excluded
        if self.mailbox_excluded(parts[0]):
            return True
        if len(parts) >= 3 and parts[1] == "Maildir" and parts[2].startswith("."):
            return self.folder_excluded(parts[0], parts[2][1:])
        return False


NOTHING = Exclusions()


def for_domain(domain: Domain) -> Exclusions:
    """The exclusions in force for ``domain`` (inherited down the customer tree)."""
    from .exclusion_policy import for_domains

    return for_domains([domain])[domain.pk]
