"""One off-node copy pass of an IMAP node: each domain dataset's snapshots to the backup
node (incremental ``zfs send -I`` relayed by the controller) and/or to a target (the same
streams as encrypted objects with a manifest per dataset).

Safe to run again at any point. On the backup node the copy is whatever ``zfs receive``
completed: a cut stream is discarded by ZFS, and the next pass finds the last common
snapshot by listing both sides (GUIDs, not names) and sends from there. On a target an
object counts only once the manifest lists it: objects are written first, the manifest
last (the commit point), and a pass begins by deleting objects no manifest lists (what a
cut pass left behind).

Excluded domains (``backup.exclusions``) are not copied anywhere. A ZFS stream carries
the whole domain dataset but not its child ``.ums-excluded``, where excluded mailboxes
and folders live (:mod:`backup.exclude_layout`): they are in no stream.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from django.utils import timezone

from deploy.connector.base import Connector

from . import drivers, exclusions
from . import offnode_zfs as oz
from .drivers import Target
from .offnode_stream import command_output, relay

PREFIX = "ums-offnode"
Log = Callable[..., None]


def copy_dataset_name(backup_dataset: str, domain_name: str) -> str:
    """Where a domain's copy lives on the backup node: keyed by domain, not by source
    node, so a domain rebuilt onto another node continues the same incremental chain."""
    return oz.check_dataset(f"{backup_dataset.strip('/')}/{domain_name}")


def copyable(domains: Iterable[Any]) -> list[Any]:
    """The domains whose data may leave the node (excluded domains may not)."""
    return [d for d in domains if not exclusions.for_domain(d).domain_excluded]


# ------------------------------------------------------------------- to the backup node


def copy_to_node(
    source: Connector,
    dest: Connector,
    dataset: str,
    copy: str,
    policy: Mapping[str, object],
    *,
    unmounted_parent: bool = True,
    progress: Callable[[int], None] = lambda sent: None,
) -> dict[str, Any]:
    """Bring ``copy`` on the backup node up to ``dataset``'s newest snapshot, then thin
    it to the policy; what was sent and what the copy holds.

    Also rebuilds a lost node (backup node to new IMAP node, ``unmounted_parent=False``
    and a policy that prunes nothing): the same steps in the other direction."""
    src = oz.list_snaps(source, dataset) or []
    if not src:
        return {"sent": None, "bytes": 0, "snapshots": [], "guids": {}, "pruned": []}
    dst = oz.list_snaps(dest, copy)
    newest = src[-1]
    base = oz.last_common(src, dst or [])
    sent_bytes = 0
    sent = None
    if base is None or base.guid != newest.guid:
        if base is None and dst:
            raise oz.OffnodeError(
                f"{copy} on {dest.host} shares no snapshot with {dataset}: "
                "destroy or rename that copy to start a new one"
            )
        if dst is not None and not dst:
            # A dataset without any snapshot holds nothing a full stream could keep;
            # receive refuses to overwrite it otherwise.
            oz.destroy_dataset(dest, copy)
        if unmounted_parent:
            oz.ensure_parent(dest, copy.rsplit("/", 1)[0])
        first = base
        if base is None:
            # The oldest in full, then every later one: the copy keeps the whole series.
            sent_bytes += relay(
                source,
                oz.send_argv(dataset, src[0].name, None),
                dest,
                oz.receive_argv(copy),
                progress=progress,
            )[0]
            base = src[0]
        if base.guid != newest.guid:
            sent_bytes += relay(
                source,
                oz.send_argv(dataset, newest.name, base.name),
                dest,
                oz.receive_argv(copy),
                progress=progress,
            )[0]
        sent = {"base": first.name if first else None, "snapshot": newest.name}
    held = oz.list_snaps(dest, copy) or []
    pruned = oz.prune(dest, copy, held, policy)
    if unmounted_parent:
        # A copy on the backup node: replication's snapshots came along with ``-I`` and
        # no retention of the backup tiers would ever remove them. (A rebuild onto a new
        # IMAP node keeps them: replication prunes its own there.)
        pruned += oz.prune_sync(dest, copy)
    names = [s.name for s in held if s.name not in pruned]
    guids = {s.name: s.guid for s in held if s.name not in pruned}
    return {
        "sent": sent,
        "bytes": sent_bytes,
        "snapshots": names,
        "guids": guids,
        "pruned": pruned,
    }


# ------------------------------------------------------------------------ to a target


def manifest_name(domain_name: str) -> str:
    return drivers.check_name(f"{PREFIX}/{domain_name}/manifest.json")


def read_manifest(driver: Target, domain_name: str) -> dict[str, Any]:
    name = manifest_name(domain_name)
    if name not in driver.list(f"{PREFIX}/{domain_name}"):
        return {"version": 1, "domain": domain_name, "chains": []}
    return json.loads(b"".join(drivers.get_decrypted(driver, name)))


def _write_manifest(driver: Target, manifest: Mapping[str, Any]) -> None:
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    drivers.put_encrypted(driver, manifest_name(str(manifest["domain"])), [data])


def referenced(manifest: Mapping[str, Any]) -> set[str]:
    return {obj["name"] for chain in manifest["chains"] for obj in chain["objects"]}


def _hashing(chunks: Iterable[bytes], digest: Any, count: list[int]) -> Iterator[bytes]:
    for piece in chunks:
        digest.update(piece)
        count[0] += len(piece)
        yield piece


def copy_to_target(
    source: Connector,
    driver: Target,
    dataset: str,
    domain_name: str,
    *,
    full_every: int,
    keep_chains: int,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Store the dataset's newest snapshot on the target: a full stream opening a new
    chain, or an incremental from the chain's last snapshot; the manifest commits it."""
    now = now or timezone.now()
    manifest = read_manifest(driver, domain_name)
    listed = set(driver.list(f"{PREFIX}/{domain_name}"))
    keep = referenced(manifest) | {manifest_name(domain_name)}
    leftovers = sorted(listed - keep)
    for name in leftovers:  # objects of a pass cut before its manifest was written
        driver.delete(name)
    src = oz.list_snaps(source, dataset) or []
    if not src:
        return {"sent": None, "bytes": 0, "leftovers": leftovers}
    newest = src[-1]
    chains = manifest["chains"]
    chain = chains[-1] if chains else None
    last = chain["objects"][-1] if chain else None
    if last and last["guid"] == newest.guid:
        return {"sent": None, "bytes": 0, "leftovers": leftovers, "manifest": manifest}
    guids = {s.guid: s for s in src}
    base = None
    if chain and last and last["guid"] in guids and len(chain["objects"]) <= full_every:
        base = guids[last["guid"]]
    else:
        chain = {"id": f"c{now.astimezone(datetime.UTC):%Y%m%dT%H%M%SZ}", "objects": []}
        chains.append(chain)
    seq = len(chain["objects"])
    name = drivers.check_name(f"{PREFIX}/{domain_name}/{chain['id']}/{seq:05d}-{newest.name}.zfs")
    digest, count = hashlib.sha256(), [0]
    stream = command_output(source, oz.send_argv(dataset, newest.name, base.name if base else None))
    stored = drivers.put_encrypted(driver, name, _hashing(stream, digest, count))
    chain["objects"].append(
        {
            "name": name,
            "base": base.name if base else None,
            "snapshot": newest.name,
            "guid": newest.guid,
            "bytes": count[0],
            "stored_bytes": stored,
            "sha256": digest.hexdigest(),
            "at": now.isoformat(),
        }
    )
    dropped = chains[:-keep_chains] if len(chains) > keep_chains else []
    manifest["chains"] = chains[-keep_chains:]
    _write_manifest(driver, manifest)  # the commit point
    for old in dropped:
        for obj in old["objects"]:
            driver.delete(obj["name"])
    return {
        "sent": {"base": base.name if base else None, "snapshot": newest.name},
        "bytes": count[0],
        "leftovers": leftovers,
        "manifest": manifest,
    }


def delete_target_copy(driver: Target, domain_name: str) -> int:
    """Every object of the domain's copy on the target, manifest first (so a cut delete
    leaves unreferenced leftovers, never a manifest naming missing objects)."""
    names = driver.list(f"{PREFIX}/{domain_name}")
    manifest = manifest_name(domain_name)
    if manifest in names:
        driver.delete(manifest)
    for name in names:
        if name != manifest:
            driver.delete(name)
    return len(names)
