"""Verification of a domain's copy on a backup node (a dataset received by ``zfs send``).

Nothing on the node is changed: two read-only commands per copy.

1. Identity: each kept snapshot the copy's row lists must exist, with the GUID the copy
   pass recorded after receiving it (``zfs get -H -p -o value guid``): a snapshot destroyed,
   or destroyed and re-created under the same name (same name, other data), is named.
2. Readability: the kept series is read end to end on the node, its stream thrown away
   (``zfs send <oldest> > /dev/null``, then ``zfs send -I <oldest> <newest> > /dev/null``).
   ZFS checks every block's checksum as it reads it, so a damaged block fails the send.
   Why a full read and not ``zfs send -nv`` (a dry run that only estimates the size from
   metadata and reads no data block): only a read proves the blocks are there. Why one
   full stream plus one ``-I`` and not one full stream per snapshot: blocks shared by
   snapshots would be read once per snapshot; this way each block any kept snapshot holds
   is read once, so a pass costs one read of the copy's data (no more than the copy pass
   that first received it). The stream never leaves the node (no transfer to the
   controller).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from deploy.connector.base import Connector

from . import offnode_zfs as oz

#: Seconds a read of the whole series may take before it counts as failed (a hung pool).
READ_TIMEOUT = 6 * 3600


def _guid(conn: Connector, snapshot: str) -> tuple[str | None, str]:
    """The snapshot's GUID, or ``None`` and why when it cannot be had."""
    # -p: without it zfs-fuse prints a GUID humanised ("9.21E"), which ~all GUIDs share.
    result = conn.run(["zfs", "get", "-H", "-p", "-o", "value", "guid", snapshot])
    if result.ok:
        return result.stdout.strip(), ""
    text = (result.stderr + result.stdout).strip()
    return None, ("missing" if "does not exist" in text else f"zfs get failed: {text[:200]}")


def _read(conn: Connector, argv: list[str]) -> str:
    """The error of reading ``argv``'s stream on the node into /dev/null ("" when read)."""
    command = f"{shlex.join(argv)} > /dev/null"
    result = conn.run(["sh", "-c", command], timeout=READ_TIMEOUT)
    if result.ok:
        return ""
    return (result.stderr or result.stdout).strip()[:300] or f"exit {result.exit_code}"


def verify_node_copy(
    conn: Connector,
    dataset: str,
    snapshots: Sequence[str],
    guids: Mapping[str, str],
    stats: dict[str, int] | None = None,
) -> list[str]:
    """The errors of the copy ``dataset`` on the backup node ``conn`` holding the kept
    ``snapshots`` (oldest first) with the recorded ``guids``; an empty list is a pass.
    ``stats["snapshots"]`` counts the snapshots read end to end."""
    stats = stats if stats is not None else {}
    oz.check_dataset(dataset)
    if not snapshots:
        return [f"{dataset}: no snapshot recorded for this copy"]
    errors: list[str] = []
    present: list[str] = []
    for name in snapshots:
        full = f"{dataset}@{name}"
        guid, why = _guid(conn, full)
        if guid is None:
            errors.append(f"{full}: {why}")
            continue
        if guids.get(name) and guids[name] != guid:
            errors.append(f"{full}: GUID {guid}, not the {guids[name]} the copy received")
            continue
        present.append(name)
    if not present:
        return errors
    oldest, newest = present[0], present[-1]
    why = _read(conn, oz.send_argv(dataset, oldest, None))
    if why:
        errors.append(f"{dataset}@{oldest}: cannot be read ({why})")
        return errors
    if newest != oldest:
        why = _read(conn, oz.send_argv(dataset, newest, oldest))
        if why:
            errors.append(f"{dataset}@{oldest}..{newest}: cannot be read ({why})")
            return errors
    stats["snapshots"] = stats.get("snapshots", 0) + len(present)
    return errors
