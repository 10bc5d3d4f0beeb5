"""ZFS steps of replication, on top of the off-node copy machinery
(:mod:`backup.offnode_zfs` for names and argument lists, :func:`backup.offnode_stream.relay`
for the stream the controller relays between two SSH channels).

A sync takes an ``ums-sync-<UTC>`` snapshot on the primary and sends everything after
the newest snapshot both sides share (by GUID) with ``zfs send -I``, so the replica keeps
the primary's backup series too. Replicas are received read-only and unmounted
(``readonly=on``, ``mountpoint=none``): no Courier, LDA or user writes them, so each
incremental applies (``receive -F`` rolls back only access-time noise).

``ums-sync-*`` names match no backup tier (:func:`backup.snapshots.tier_of`), so the
snapshot schedule and the off-node copies never prune them; only :func:`prune_sync`
does, keeping every snapshot a replica still needs as its base.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from typing import Any

from backup import offnode_zfs as oz
from backup.offnode_stream import relay
from deploy.connector.base import Connector
from deploy.services.zfs import release

SYNC_PREFIX = "ums-sync-"
#: Where a fenced node's diverged copy of a domain is kept (never mounted, never pruned).
FENCED_PARENT = "ums-fenced"


class ReplicationError(oz.OffnodeError):
    """A replication step failed; the message is for administrators."""


def sync_name(now: datetime.datetime) -> str:
    return f"{SYNC_PREFIX}{now.astimezone(datetime.UTC):%Y%m%dT%H%M%S}Z"


def sync_time(name: str) -> datetime.datetime | None:
    """When an ``ums-sync-*`` snapshot was taken (from its name)."""
    if not name.startswith(SYNC_PREFIX):
        return None
    try:
        return datetime.datetime.strptime(name[len(SYNC_PREFIX) :], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.UTC
        )
    except ValueError:
        return None


def list_all(conn: Connector, dataset: str) -> list[oz.Snap] | None:
    """Every snapshot of ``dataset`` (ours of any kind), oldest first; None: no dataset."""
    result = conn.run(
        ["zfs", "get", "-Hp", "-r", "-o", "name,property,value", "guid,createtxg", dataset]
    )
    if not result.ok:
        if "does not exist" in (result.stderr + result.stdout):
            return None
        raise ReplicationError(f"zfs get on {conn.host} failed: {result.stderr.strip()[:300]}")
    props: dict[str, dict[str, str]] = {}
    for line in result.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].startswith(f"{dataset}@"):
            props.setdefault(parts[0].partition("@")[2], {})[parts[1]] = parts[2]
    snaps = [
        oz.Snap(name, values.get("guid", ""), int(values.get("createtxg", "0") or 0))
        for name, values in props.items()
        if name.startswith("ums-")
    ]
    return sorted(snaps, key=lambda s: (s.txg, s.name))


def _run(conn: Connector, argv: list[str], what: str) -> None:
    result = conn.run(argv)
    if not result.ok:
        raise ReplicationError(f"{what} on {conn.host}: {(result.stderr or result.stdout)[:300]}")


def take_sync_snapshot(conn: Connector, dataset: str, now: datetime.datetime) -> str:
    """A new ``ums-sync-*`` snapshot of the primary's dataset (one second later while the
    name is taken: two syncs within a second must still both capture the newest mail)."""
    have = [s.name for s in list_all(conn, dataset) or []]
    # Strictly after the newest sync snapshot (never pruned): a name freed by pruning
    # must not come back, or a replica still holding it would refuse the stream.
    times = [t for t in map(sync_time, have) if t is not None]
    at = max([now, *(t + datetime.timedelta(seconds=1) for t in times)])
    while (name := sync_name(at)) in have:
        at += datetime.timedelta(seconds=1)
    _run(conn, ["zfs", "snapshot", f"{oz.check_dataset(dataset)}@{name}"], "zfs snapshot")
    return name


def keep_replica(conn: Connector, dataset: str) -> None:
    """The replica stays read-only and out of Courier's tree (idempotent)."""
    result = conn.run(["zfs", "get", "-H", "-o", "value", "readonly,mountpoint", dataset])
    values = result.stdout.split() if result.ok else []
    if values[:1] != ["on"]:
        _run(conn, ["zfs", "set", "readonly=on", dataset], "zfs set readonly")
    if values[1:2] != ["none"]:
        _run(conn, ["zfs", "set", "mountpoint=none", dataset], "zfs set mountpoint")


def send_to_replica(
    primary: Connector,
    replica: Connector,
    dataset: str,
    newest: str,
    *,
    progress: Callable[[int], None] = lambda sent: None,
) -> dict[str, Any]:
    """Bring the replica's ``dataset`` up to the primary's snapshot ``newest``."""
    src = list_all(primary, dataset) or []
    names = [s.name for s in src]
    if newest not in names:
        raise ReplicationError(f"{dataset}@{newest} is missing on {primary.host}")
    src = src[: names.index(newest) + 1]
    dst = list_all(replica, dataset)
    base = oz.last_common(src, dst or [])
    sent = 0
    if base is None:
        if dst is not None:
            raise ReplicationError(
                f"{dataset} on {replica.host} shares no snapshot with the primary"
            )
        _parent_exists(replica, dataset.rsplit("/", 1)[0])
        sent += relay(
            primary,
            oz.send_argv(dataset, src[0].name, None),
            replica,
            oz.receive_argv(dataset),
            progress=progress,
        )[0]
        keep_replica(replica, dataset)
        base = src[0]
    else:
        # Snapshots the replica has after the base (a primary rolled back since, or a cut
        # pass) would refuse the incremental: they hold nothing the primary still has.
        after = [s for s in dst or [] if s.txg > _txg(dst or [], base.guid)]
        for snap in after:
            _run(replica, ["zfs", "destroy", f"{dataset}@{snap.name}"], "zfs destroy")
        keep_replica(replica, dataset)
    if base.guid != src[-1].guid:
        sent += relay(
            primary,
            oz.send_argv(dataset, newest, base.name),
            replica,
            oz.receive_argv(dataset),
            progress=progress,
        )[0]
    mirror_prune(replica, dataset, [s.name for s in src], keep=newest)
    return {"base": None if sent == 0 else base.name, "snapshot": newest, "bytes": sent}


def _txg(snaps: Iterable[oz.Snap], guid: str) -> int:
    return next((s.txg for s in snaps if s.guid == guid), 0)


def _parent_exists(conn: Connector, parent: str) -> None:
    if conn.run(["zfs", "get", "-H", "-o", "value", "type", parent]).ok:
        return
    result = conn.run(["zfs", "create", "-p", oz.check_dataset(parent)])
    if not result.ok and "exists" not in result.stderr:
        raise ReplicationError(f"cannot create {parent} on {conn.host}: {result.stderr[:300]}")


def mirror_prune(conn: Connector, dataset: str, primary_names: list[str], *, keep: str) -> None:
    """Snapshots the primary has pruned since, pruned on the replica as well."""
    wanted = set(primary_names) | {keep}
    for snap in list_all(conn, dataset) or []:
        if snap.name not in wanted:
            conn.run(["zfs", "destroy", f"{dataset}@{snap.name}"])


def prune_sync(conn: Connector, dataset: str, needed: set[str]) -> list[str]:
    """Destroy the primary's ``ums-sync-*`` snapshots no replica needs as its base."""
    snaps = [s for s in list_all(conn, dataset) or [] if s.name.startswith(SYNC_PREFIX)]
    destroyed = []
    for snap in snaps[:-1]:  # the newest stays: the next sync's base
        if snap.name in needed:
            continue
        if conn.run(["zfs", "destroy", f"{dataset}@{snap.name}"]).ok:
            destroyed.append(snap.name)
    return destroyed


def set_aside(conn: Connector, dataset: str, pool: str, domain: str, epoch: int) -> str | None:
    """Move a fenced node's diverged dataset out of the mail store, kept unmounted for an
    administrator to recover mail accepted after the last sync; its new name, or None
    when there is no such dataset (already moved, or never there)."""
    if not conn.run(["zfs", "get", "-H", "-o", "value", "type", dataset]).ok:
        return None
    aside = oz.check_dataset(f"{pool}/{FENCED_PARENT}/{domain}-e{epoch}")
    if conn.run(["zfs", "get", "-H", "-o", "value", "type", aside]).ok:
        raise ReplicationError(f"{aside} already exists on {conn.host}")
    _run(conn, ["zfs", "set", "readonly=on", dataset], "zfs set readonly")
    _run(conn, ["zfs", "set", "mountpoint=none", dataset], "zfs set mountpoint")
    result = conn.run(["zfs", "create", "-p", "-o", "mountpoint=none", f"{pool}/{FENCED_PARENT}"])
    if not result.ok and "exists" not in result.stderr:
        raise ReplicationError(f"cannot create {pool}/{FENCED_PARENT}: {result.stderr[:300]}")
    _run(conn, ["zfs", "rename", dataset, aside], "zfs rename")
    return aside


def promote(conn: Connector, dataset: str, mountpoint: str | None) -> None:
    """The replica becomes the domain's writable, mounted store (idempotent; converge
    would do the same from the new placement, this only makes it not wait)."""
    result = conn.run(["zfs", "get", "-H", "-o", "value", "readonly,mountpoint", dataset])
    if not result.ok:
        raise ReplicationError(f"{dataset} is missing on {conn.host}: {result.stderr[:300]}")
    values = result.stdout.split()
    if values[:1] != ["off"]:
        _run(conn, ["zfs", "set", "readonly=off", dataset], "zfs set readonly")
    if mountpoint and values[1:2] != [mountpoint]:
        _run(conn, ["zfs", "set", f"mountpoint={mountpoint}", dataset], "zfs set mountpoint")
    elif not mountpoint and values[1:2] == ["none"]:
        _run(conn, ["zfs", "inherit", "mountpoint", dataset], "zfs inherit mountpoint")


def fence(conn: Connector, dataset: str) -> None:
    """Stop this node serving the dataset: read-only, unmounted (an IMAP session or a
    delivery still inside it is stopped: :func:`release.unmount_releasing`)."""
    result = conn.run(["zfs", "get", "-H", "-o", "value", "readonly,mountpoint", dataset])
    if not result.ok:
        return
    values = result.stdout.split()
    if values[:1] != ["on"]:
        _run(conn, ["zfs", "set", "readonly=on", dataset], "zfs set readonly")
    if values[1:2] != ["none"]:
        try:
            release.unmount_releasing(conn, dataset, values[1] if len(values) > 1 else "")
        except release.UnmountFailed as exc:
            raise ReplicationError(str(exc)) from exc
        _run(conn, ["zfs", "set", "mountpoint=none", dataset], "zfs set mountpoint")
