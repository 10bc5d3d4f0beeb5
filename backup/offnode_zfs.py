"""ZFS facts and commands of off-node copies: snapshots in creation order with their
GUIDs (the identity two sides compare), the last common snapshot, send and receive
argument lists, and retention of received snapshots.

Only commands zfs-fuse 0.7 and OpenZFS both understand: ``zfs get -Hp`` (no ``list -p``,
no JSON), ``send [-I]``, ``receive -F`` (no ``-u``, no resumable receive: a cut stream is
discarded and sent again from the last common snapshot).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from deploy.connector.base import Connector

from . import snapshots

_DATASET_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]*(/[A-Za-z0-9][A-Za-z0-9_.:-]*)*$")


class OffnodeError(Exception):
    """An off-node copy step failed; the message is for administrators."""


@dataclass(frozen=True)
class Snap:
    name: str
    guid: str
    txg: int


def check_dataset(name: str) -> str:
    """``name`` if it is a plain ZFS dataset name (it reaches command lines)."""
    if not _DATASET_RE.match(name) or ".." in name or len(name) > 250:
        raise OffnodeError(f"invalid dataset name {name!r}")
    return name


def list_snaps(conn: Connector, dataset: str) -> list[Snap] | None:
    """Our snapshots of ``dataset``, oldest first; None when the dataset does not exist."""
    result = conn.run(
        ["zfs", "get", "-Hp", "-r", "-o", "name,property,value", "guid,createtxg", dataset]
    )
    if not result.ok:
        if "does not exist" in (result.stderr + result.stdout):
            return None
        raise OffnodeError(f"zfs get on {conn.host} failed: {result.stderr.strip()[:300]}")
    props: dict[str, dict[str, str]] = {}
    for line in result.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].startswith(f"{dataset}@"):
            props.setdefault(parts[0].partition("@")[2], {})[parts[1]] = parts[2]
    snaps = [
        Snap(name, values.get("guid", ""), int(values.get("createtxg", "0") or 0))
        for name, values in props.items()
        if snapshots.tier_of(name) is not None
    ]
    return sorted(snaps, key=lambda s: (s.txg, s.name))


def last_common(source: Sequence[Snap], dest: Sequence[Snap]) -> Snap | None:
    """The newest source snapshot the destination has (same GUID, not just the name)."""
    have = {s.guid for s in dest}
    for snap in reversed(source):
        if snap.guid in have:
            return snap
    return None


def send_argv(dataset: str, newest: str, base: str | None) -> list[str]:
    """Full send of ``newest``, or every snapshot after ``base`` up to it (``-I``), so the
    copy keeps the hourly/daily/monthly series its own retention then thins."""
    if base is None:
        return ["zfs", "send", f"{dataset}@{newest}"]
    return ["zfs", "send", "-I", f"{dataset}@{base}", f"{dataset}@{newest}"]


def receive_argv(dataset: str) -> list[str]:
    # -F: roll the copy back to its last snapshot first (a mounted copy may have been
    # touched by atime), the only state an incremental can apply to.
    return ["zfs", "receive", "-F", dataset]


def ensure_parent(conn: Connector, parent: str) -> None:
    """The copies' parent on the backup node, not mounted (mail stays out of its
    filesystem tree; the children inherit ``mountpoint=none``)."""
    if conn.run(["zfs", "get", "-H", "-o", "value", "type", parent]).ok:
        return
    _pool, _sep, rest = parent.partition("/")
    if not rest:
        raise OffnodeError(f"the copies' dataset must be inside a pool, not {parent!r}")
    result = conn.run(["zfs", "create", "-p", "-o", "mountpoint=none", parent])
    if not result.ok and "exists" not in result.stderr:
        raise OffnodeError(f"cannot create {parent} on {conn.host}: {result.stderr.strip()[:300]}")


def prune(
    conn: Connector, dataset: str, snaps: Sequence[Snap], policy: Mapping[str, object]
) -> list[str]:
    """Destroy received snapshots beyond the policy's retention, never the newest one
    (the base the next incremental starts from); what was destroyed."""
    if not snaps:
        return []
    keep_base = snaps[-1].name
    names = {s.name for s in snaps}
    destroyed = []
    # On-demand snapshots age out here as on the IMAP node (by the time in their name).
    for name in snapshots.to_prune(names, policy, datetime.datetime.now(datetime.UTC)):
        if name == keep_base:
            continue
        snapshots.destroy(conn, dataset, name)
        destroyed.append(name)
    return destroyed


#: Replication's snapshot names (``replication.zfs.sync_name``; backup imports no
#: replication code). ``send -I`` between two backup snapshots carries every snapshot in
#: between, so the ones replication took on the primary arrive in the copies too.
_SYNC_RE = re.compile(r"^ums-sync-\d{8}T\d{6}Z$")


def prune_sync(conn: Connector, dataset: str) -> list[str]:
    """Destroy the ``ums-sync-*`` snapshots a copy received; what was destroyed.

    None of them is ever the base of the copy's next incremental: that is the newest
    backup snapshot both sides share, and the copy's most recent snapshot is always a
    backup one (a send ends at the source's newest *backup* snapshot). The copy's most
    recent snapshot is kept whatever its name all the same: ``receive`` of an
    incremental needs the copy to end at the stream's base."""
    check_dataset(dataset)
    result = conn.run(
        ["zfs", "get", "-Hp", "-r", "-o", "name,property,value", "createtxg", dataset]
    )
    if not result.ok:
        if "does not exist" in (result.stderr + result.stdout):
            return []
        raise OffnodeError(f"zfs get on {conn.host} failed: {result.stderr.strip()[:300]}")
    txgs: dict[str, int] = {}
    for line in result.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].startswith(f"{dataset}@") and parts[2].isdigit():
            txgs[parts[0].partition("@")[2]] = int(parts[2])
    if not txgs:
        return []
    newest = max(txgs, key=lambda n: (txgs[n], n))
    destroyed = []
    for name in sorted(txgs, key=lambda n: (txgs[n], n)):
        if name == newest or not _SYNC_RE.match(name):
            continue
        gone = conn.run(["zfs", "destroy", f"{dataset}@{name}"])
        if (
            not gone.ok
            and "could not find" not in gone.stderr
            and "does not exist" not in gone.stderr
        ):
            raise OffnodeError(
                f"zfs destroy {dataset}@{name} on {conn.host} failed: {gone.stderr.strip()[:300]}"
            )
        destroyed.append(name)
    return destroyed


def destroy_dataset(conn: Connector, dataset: str) -> bool:
    """``zfs destroy -r`` of a copy; False when it was already gone."""
    check_dataset(dataset)
    result = conn.run(["zfs", "destroy", "-r", dataset])
    if result.ok:
        return True
    if "does not exist" in result.stderr or "could not find" in result.stderr:
        return False
    raise OffnodeError(f"cannot destroy {dataset} on {conn.host}: {result.stderr.strip()[:300]}")
