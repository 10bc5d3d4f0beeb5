"""Restore onto a new node: a lost IMAP node's domains received onto another IMAP node
from their off-node copies, then placed there and converged.

Steps per domain, each safe to repeat (the ``backup.rebuild_node`` job may be run again
after a dead worker or a cut stream):

1. receive the dataset on the new node from the backup node (every snapshot the copy
   holds: the oldest in full, then one incremental; a repeat continues from the last
   common snapshot) or, without one, from the target (the manifest's newest chain, object
   by object, skipping snapshots already received), or, when a Maildir archive is the
   only copy (or chosen), unpack the newest archive into a new dataset
   (:mod:`backup.rebuild_archive`);
2. mount it where Postfix and Courier keep the domain (``<mail_root>/<domain>``).

Then, in one transaction, every domain's placement moves to the new node (audited) and the
new node and the other mail nodes of the customers are marked for converge, so Postfix
relays to it and Courier there serves the mail. The lost node is not converged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext_noop

from deploy.connector.base import Connector
from deploy.services.zfs import ZfsService
from servers.models import Node
from ums import auditing

from . import drivers, offnode, snapshot_run
from . import offnode_zfs as oz
from .models_offnode import OffnodeCopy
from .offnode_stream import feed_command

#: Receiving onto the new node thins nothing: the domain's own schedule does that.
KEEP_ALL = {"enabled": False}


def source_copy(domain_name: str, prefer: str = "") -> OffnodeCopy | None:
    """The copy to rebuild from: the backup node's by default (a plain ``zfs send``),
    the target's stream chain when there is none or when asked, and the newest Maildir
    archive when that is the only copy or when asked."""
    copies = list(
        OffnodeCopy.objects.filter(domain_name=domain_name).select_related("backup_node", "target")
    )
    order = {
        OffnodeCopy.TARGET: [OffnodeCopy.TARGET, OffnodeCopy.NODE, OffnodeCopy.ARCHIVE],
        OffnodeCopy.ARCHIVE: [OffnodeCopy.ARCHIVE, OffnodeCopy.NODE, OffnodeCopy.TARGET],
    }.get(prefer, [OffnodeCopy.NODE, OffnodeCopy.TARGET, OffnodeCopy.ARCHIVE])
    for kind in order:
        for copy in copies:
            if copy.kind == kind:
                return copy
    return None


def receive_from_target(
    conn: Connector, driver: drivers.Target, domain_name: str, dataset: str
) -> list[str]:
    """Apply the manifest's newest chain to ``dataset``; the snapshots received."""
    manifest = offnode.read_manifest(driver, domain_name)
    if not manifest["chains"]:
        raise oz.OffnodeError(f"the target holds no copy of {domain_name}")
    have = {s.guid for s in (oz.list_snaps(conn, dataset) or [])}
    received = []
    for obj in manifest["chains"][-1]["objects"]:
        if obj["guid"] in have:
            continue
        feed_command(conn, oz.receive_argv(dataset), drivers.get_decrypted(driver, obj["name"]))
        received.append(obj["snapshot"])
    return received


def ensure_mail_parent(conn: Connector, parent: str) -> None:
    """The mail store's parent dataset on the new node (converge creates it too; a node
    whose pool was made after its first converge has none yet)."""
    if conn.run(["zfs", "get", "-H", "-o", "value", "type", parent]).ok:
        return
    result = conn.run(["zfs", "create", "-p", oz.check_dataset(parent)])
    if not result.ok and "exists" not in result.stderr:
        raise oz.OffnodeError(f"cannot create {parent}: {result.stderr.strip()[:300]}")


def mount(conn: Connector, dataset: str, domain_name: str, *, defaults: bool = False) -> None:
    """Mount the dataset where the domain's mail lives. ``defaults``: with the built-in
    mail root when the deployment sets none (a dataset made from an archive was mounted
    elsewhere while it was filled, so it cannot wait for the converge to move it)."""
    from deploy.desired import DEFAULT_SETTINGS

    conf = getattr(settings, "UMS_CONVERGE", {})
    if defaults:
        conf = {**DEFAULT_SETTINGS, **conf}
    root = ZfsService._mail_root(conf)
    if not root:
        return  # the dataset inherits the parent's mountpoint, as converge would leave it
    result = conn.run(["zfs", "set", f"mountpoint={root}/{domain_name}", dataset])
    if not result.ok:
        raise oz.OffnodeError(f"cannot mount {dataset}: {result.stderr.strip()[:300]}")


def receive_domain(
    conn: Connector, domain: Any, copy: OffnodeCopy, say: Callable[..., None]
) -> None:
    from deploy.nodes import session

    parent = snapshot_run.layout(settings.UMS_CONVERGE)
    dataset = snapshot_run.dataset_of(parent, domain)
    ensure_mail_parent(conn, parent)
    if copy.kind == OffnodeCopy.NODE:
        with session(copy.backup_node) as backup:
            result = offnode.copy_to_node(
                backup, conn, copy.location, dataset, KEEP_ALL, unmounted_parent=False
            )
        done = result["sent"]["snapshot"] if result["sent"] else None
    elif copy.kind == OffnodeCopy.ARCHIVE:
        from .rebuild_archive import receive_archive

        driver = drivers.driver_for(copy.target)
        try:
            done = receive_archive(conn, driver, domain.name, dataset)
        finally:
            driver.close()
    else:
        driver = drivers.driver_for(copy.target)
        try:
            got = receive_from_target(conn, driver, domain.name, dataset)
        finally:
            driver.close()
        done = got[-1] if got else None
    if done:
        say(
            gettext_noop("received %(domain)s up to %(snapshot)s from %(source)s"),
            domain=domain.name,
            snapshot=done,
            source=copy.backup_node.hostname if copy.backup_node else copy.target.name,
        )
    else:
        say(gettext_noop("%(domain)s was already received"), domain=domain.name)
    archive = copy.kind == OffnodeCopy.ARCHIVE
    mount(conn, dataset, domain.name, defaults=archive)
    if archive:
        from .rebuild_archive import ensure_mounted

        ensure_mounted(conn, dataset)


def carry_setting(lost: Node, new: Node) -> None:
    """The new node inherits the lost node's copy setting (unless it has its own), so
    its domains go on being copied, continuing the same chains."""
    from .models_offnode import OffnodeSetting

    old = OffnodeSetting.objects.filter(node=lost).first()
    if old is None or OffnodeSetting.objects.filter(node=new).exists():
        return
    setting = OffnodeSetting.objects.create(
        node=new,
        customer_path=new.customer_path,
        **{field: getattr(old, field) for field in OffnodeSetting.audit_fields},
    )
    auditing.record(
        "offnode_setting.update",
        obj=setting,
        after={**auditing.snapshot(setting), "from_node": lost.hostname},
    )


def move_placements(domains: Iterable[Any], lost: Node, new: Node) -> list[int]:
    """Place ``domains`` on ``new`` (audited) and mark the mail nodes for converge;
    the node ids marked."""
    from deploy import dirty
    from deploy.models import DomainPlacement

    domains = list(domains)
    with transaction.atomic():
        moved = DomainPlacement.objects.filter(domain__in=domains).exclude(node=new)
        for placement in moved.select_related("domain"):
            auditing.record(
                "domain.rebuilt",
                obj=placement.domain,
                before={"node": lost.hostname},
                after={"node": new.hostname},
            )
        moved.update(node=new)
        nodes = {new.pk}
        for domain in domains:
            nodes.update(dirty.nodes_serving(domain.customer_path))
        nodes.discard(lost.pk)
        carry_setting(lost, new)
        dirty.bump(nodes, reason="domains rebuilt onto a new node")
        transaction.on_commit(lambda: dirty.ensure_queued(nodes, reason="rebuild"))
    return sorted(nodes)
