"""The permanent-deletion holder of off-node copies (see :mod:`backup.holders`).

A copy is a whole domain dataset (on the backup node) or its ``zfs send`` streams (on a
target): it cannot be rewritten without one mailbox, so purging a mailbox destroys the
domain's copies, and the listing says that every mailbox of the domain goes with them.
The next copy pass then starts a fresh chain from the live dataset (which purge has
already rid of the mailbox, and whose older snapshots purge destroys too).
"""

from __future__ import annotations

from collections.abc import Callable

from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from mail.models import Domain
from ums.joblog import log_entry

from . import drivers, offnode
from . import offnode_zfs as oz
from .holders import HeldCopy
from .models_offnode import OffnodeCopy


class OffnodeCopyHolder:
    name = "offnode"

    def find(self, domain: Domain, local_part: str | None) -> list[HeldCopy]:
        found = []
        rows = OffnodeCopy.objects.filter(
            domain_name=domain.name, kind__in=(OffnodeCopy.NODE, OffnodeCopy.TARGET)
        )
        for copy in rows.select_related("backup_node", "target"):
            if copy.kind == OffnodeCopy.NODE:
                where = _("dataset %(dataset)s on backup node %(node)s") % {
                    "dataset": copy.location,
                    "node": copy.backup_node.hostname,
                }
            else:
                where = _("zfs send streams of %(domain)s on target %(target)s") % {
                    "domain": domain.name,
                    "target": copy.target.name,
                }
            found.append(
                HeldCopy(
                    holder=self.name,
                    description=_("Off-node copy: %(where)s (%(count)s snapshots)")
                    % {"where": where, "count": len(copy.snapshots)},
                    also_removes=[_("all mailboxes of %(domain)s") % {"domain": domain.name}],
                    ref=copy.pk,
                )
            )
        return found

    def destroy(
        self, copy: HeldCopy, domain: Domain, local_part: str | None, log: Callable[[str], None]
    ) -> None:
        from deploy.nodes import session

        row = OffnodeCopy.objects.filter(pk=copy.ref).select_related("backup_node", "target")
        row = row.first()
        if row is None:
            return  # already destroyed (idempotent)
        if row.kind == OffnodeCopy.NODE:
            with session(row.backup_node) as conn:
                gone = oz.destroy_dataset(conn, row.location)
            if gone:
                log(
                    log_entry(
                        gettext_noop("destroyed %(dataset)s on %(node)s"),
                        dataset=row.location,
                        node=row.backup_node.hostname,
                    )
                )
        else:
            driver = drivers.driver_for(row.target)
            try:
                count = offnode.delete_target_copy(driver, row.domain_name)
            finally:
                driver.close()
            log(
                log_entry(
                    gettext_noop("deleted %(count)s objects of %(domain)s on %(target)s"),
                    count=count,
                    domain=row.domain_name,
                    target=row.target.name,
                )
            )
        row.delete()


HOLDER = OffnodeCopyHolder()
