"""The copy holders this app owns (see :mod:`backup.holders`): local ZFS snapshots on the
IMAP node, and Maildir exports (controller files and target objects).

A ZFS snapshot is of the whole domain dataset and cannot be rewritten: purging one
mailbox destroys every snapshot of its domain, and with them the history of the domain's
other mailboxes; the listing says so (``also_removes``) before anything happens. A
snapshot of a cloned export goes too (``zfs destroy -R``). A domain export holds every
mailbox of the domain, so purging one mailbox destroys the whole file as well.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings

from mail.models import Domain, Mailbox
from servers.models import Node

from . import export as export_mod
from . import snapshot_run
from .holders import HeldCopy, register
from .models import Export, Purge, Snapshot


def node_of(domain: Domain) -> Node | None:
    """The domain's IMAP node: its placement, or the one a started purge recorded (the
    placement goes with the domain row)."""
    from deploy.models import DomainPlacement

    if domain.pk:
        placement = DomainPlacement.objects.filter(domain_id=domain.pk).select_related("node")
        if placement.exists():
            return placement.first().node
    purge = Purge.objects.filter(domain_name=domain.name, node__isnull=False).first()
    return purge.node if purge else None


def dataset_of(domain: Domain) -> str | None:
    conf = getattr(settings, "UMS_CONVERGE", {})
    if not conf.get("mail_store_pool"):
        return None
    return snapshot_run.dataset_of(snapshot_run.layout(conf), domain)


def _others(domain: Domain, local_part: str | None) -> list[str]:
    """What else goes with a copy of the whole domain when one mailbox is purged."""
    if local_part is None:
        return []
    others = []
    if domain.pk:
        others = sorted(
            Mailbox.objects.filter(domain_id=domain.pk)
            .exclude(local_part=local_part)
            .values_list("email", flat=True)
        )
    listed = ", ".join(others) if others else "(none in the database now)"
    return [f"every other mailbox of {domain.name} as it was then: {listed}"]


class ZfsSnapshotHolder:
    """Every snapshot of the domain's dataset, ours or anyone's (``zfs list``)."""

    name = "zfs-snapshots"

    def find(self, domain: Domain, local_part: str | None) -> list[HeldCopy]:
        from deploy.nodes import session

        dataset, node = dataset_of(domain), node_of(domain)
        if dataset is None or node is None:
            return []
        with session(node) as conn:
            listed = conn.run(["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset])
        if not listed.ok:
            if "does not exist" in listed.stderr:
                return []
            raise RuntimeError(f"zfs list on {node.hostname}: {listed.stderr.strip()}")
        also = _others(domain, local_part)
        if also:
            also.append("(a ZFS snapshot cannot be rewritten without one mailbox: destroyed)")
        return [
            HeldCopy(
                holder=self.name,
                description=f"ZFS snapshot {full} on {node.hostname}",
                also_removes=list(also),
                ref={"node_id": node.pk, "snapshot": full},
            )
            for full in listed.stdout.split()
            if full.startswith(f"{dataset}@")
        ]

    def destroy(
        self, copy: HeldCopy, domain: Domain, local_part: str | None, log: Callable[[str], None]
    ) -> None:
        from deploy.nodes import session

        node = Node.objects.get(pk=copy.ref["node_id"])
        full = copy.ref["snapshot"]
        with session(node) as conn:
            # -R: an export's read-only clone of it goes too (it holds the same data).
            result = conn.run(["zfs", "destroy", "-R", full])
        gone = "could not find" in result.stderr or "does not exist" in result.stderr
        if not result.ok and not gone:
            raise RuntimeError(f"zfs destroy {full}: {result.stderr.strip()}")
        dataset, _sep, name = full.partition("@")
        Snapshot.objects.filter(node=node, dataset=dataset, name=name).delete()
        log(f"destroyed {copy.description}")


class ExportHolder:
    """Maildir exports of the mailbox, and of its whole domain (which contain it)."""

    name = "exports"

    def find(self, domain: Domain, local_part: str | None) -> list[HeldCopy]:
        # A purged row keeps its file and object names until both are gone, so a purge
        # interrupted between marking and deleting finds them again.
        rows = Export.objects.filter(domain_name=domain.name).exclude(
            status=Export.PURGED, file_name="", object_name=""
        )
        if local_part is not None:
            rows = rows.filter(local_part__in=[local_part, ""])
        copies = []
        for export in rows.select_related("target").order_by("pk"):
            where = (
                f"object {export.object_name} on target {export.target.name}"
                if export.target_id
                else f"file {export.file_name} on the controller"
                if export.file_name
                else "nowhere reachable"
            )
            whole = local_part is not None and not export.local_part
            copies.append(
                HeldCopy(
                    holder=self.name,
                    description=f"export #{export.pk} of {export}: {where}",
                    also_removes=_others(domain, local_part) if whole else [],
                    ref=export.pk,
                )
            )
        return copies

    def destroy(
        self, copy: HeldCopy, domain: Domain, local_part: str | None, log: Callable[[str], None]
    ) -> None:
        # Marked first: an export job still writing it then discards what it wrote.
        Export.objects.filter(pk=copy.ref).update(status=Export.PURGED)
        export = Export.objects.select_related("target").get(pk=copy.ref)
        if not export_mod.discard(export):
            log(f"export #{export.pk}: its target was deleted, the object cannot be reached")
        Export.objects.filter(pk=export.pk).update(file_name="", object_name="")
        log(f"destroyed {copy.description}")


def register_all() -> None:
    register(ZfsSnapshotHolder())
    register(ExportHolder())
