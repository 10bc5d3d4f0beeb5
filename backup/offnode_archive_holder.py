"""The permanent-deletion holder of Maildir archive copies (see :mod:`backup.holders`).

Unlike a ZFS stream, a tar can be rewritten without one mailbox: purging a mailbox
rewrites each of the domain's archives that holds it (the mailbox's members left out, a
new object, the manifest, then the old object deleted), and the other mailboxes'
archives stay. Purging a domain deletes its archives whole.
"""

from __future__ import annotations

from collections.abc import Callable

from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from mail.models import Domain
from ums.joblog import log_entry

from . import drivers, offnode_archive
from .holders import HeldCopy
from .models_offnode import OffnodeCopy


class ArchiveCopyHolder:
    name = "offnode_archive"

    def find(self, domain: Domain, local_part: str | None) -> list[HeldCopy]:
        rows = OffnodeCopy.objects.filter(domain_name=domain.name, kind=OffnodeCopy.ARCHIVE)
        found = []
        for row in rows.select_related("target"):
            values = {"count": len(row.snapshots), "domain": domain.name, "target": row.target.name}
            if local_part:
                text = _(
                    "Off-node copy: %(count)s Maildir archives of %(domain)s on target "
                    "%(target)s (rewritten without the mailbox)"
                )
                also: list[str] = []
            else:
                text = _(
                    "Off-node copy: %(count)s Maildir archives of %(domain)s on target %(target)s"
                )
                also = [_("all mailboxes of %(domain)s") % {"domain": domain.name}]
            found.append(
                HeldCopy(holder=self.name, description=text % values, also_removes=also, ref=row.pk)
            )
        return found

    def destroy(
        self, copy: HeldCopy, domain: Domain, local_part: str | None, log: Callable[[str], None]
    ) -> None:
        row = OffnodeCopy.objects.filter(pk=copy.ref).select_related("target").first()
        if row is None:
            return  # already destroyed (idempotent)
        driver = drivers.driver_for(row.target)
        try:
            if local_part:
                names = offnode_archive.rewrite_without(driver, row.domain_name, local_part)
            else:
                count = offnode_archive.delete_archives(driver, row.domain_name)
        finally:
            driver.close()
        if local_part:
            key = local_part.lower()
            row.members = {
                snap: {box: f for box, f in boxes.items() if box.lower() != key}
                for snap, boxes in row.members.items()
            }
            row.save(update_fields=["members"])
            log(
                log_entry(
                    gettext_noop(
                        "rewrote %(count)s archives of %(domain)s on %(target)s without %(mailbox)s"
                    ),
                    count=len(names),
                    domain=row.domain_name,
                    target=row.target.name,
                    mailbox=local_part,
                )
            )
            return
        log(
            log_entry(
                gettext_noop("deleted %(count)s archive objects of %(domain)s on %(target)s"),
                count=count,
                domain=row.domain_name,
                target=row.target.name,
            )
        )
        row.delete()


HOLDER = ArchiveCopyHolder()
