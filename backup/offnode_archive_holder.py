"""The permanent-deletion holder of Maildir archive copies (see :mod:`backup.holders`).

An archive holds every mailbox of its domain that was not excluded when it was made, so
a purge of one mailbox deletes the domain's archives on that target (the listing says
all mailboxes of the domain go with them); the next copy pass makes a fresh archive from
the next snapshot, which no longer holds the purged mailbox.
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
        return [
            HeldCopy(
                holder=self.name,
                description=_(
                    "Off-node copy: %(count)s Maildir archives of %(domain)s on target %(target)s"
                )
                % {"count": len(row.snapshots), "domain": domain.name, "target": row.target.name},
                also_removes=[_("all mailboxes of %(domain)s") % {"domain": domain.name}],
                ref=row.pk,
            )
            for row in rows.select_related("target")
        ]

    def destroy(
        self, copy: HeldCopy, domain: Domain, local_part: str | None, log: Callable[[str], None]
    ) -> None:
        row = OffnodeCopy.objects.filter(pk=copy.ref).select_related("target").first()
        if row is None:
            return  # already destroyed (idempotent)
        driver = drivers.driver_for(row.target)
        try:
            count = offnode_archive.delete_archives(driver, row.domain_name)
        finally:
            driver.close()
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
