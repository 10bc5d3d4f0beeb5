"""Maildir archive copies to a target: the off-node copy kind that honours mailbox and
folder exclusions (issue 13, item 6).

Excluded mailboxes and folders are already outside the snapshots
(:mod:`backup.exclude_layout`); an archive also checks every entry. Each pass reads the
domain's newest snapshot through a read-only clone (zfs-fuse has no ``.zfs/snapshot``
folder; OpenZFS's is used where it exists), lists the domain folder's structure down to
the Maildir++ folders (``find``, three levels, no message files), asks
:meth:`backup.exclusions.Exclusions.excludes_path` about every entry, and has GNU
``tar`` on the node archive exactly the entries left, the list fed as NUL-separated data
on its standard input (``--verbatim-files-from``: a name is never an option, and nothing
is ever a shell string). The tar streams over SSH in chunks, is hashed, and is stored
encrypted with the backup key.

Objects on the target: ``ums-archive/<domain>/<time>-<snapshot>.tar`` and the domain's
``ums-archive/<domain>/manifest.json`` (encrypted too) listing each archive with its
snapshot, sizes, SHA-256 of the plain tar, the mailboxes it holds and what was left out.
**The manifest is written last and is the commit point**: a pass first deletes objects no
manifest lists (what a cut pass left behind); archives beyond retention are deleted only
after the manifest that drops them is written. A full archive every ``full_every``
passes, increments of its chain in between (:mod:`backup.archive_chain`: an index object
beside each tar records the point's whole tree); the target keeps the newest ``keep``
chains, each whole.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import re
import secrets
import tarfile
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from django.utils import timezone

from deploy.connector.base import Connector

from . import archive_chain as chain
from . import drivers, snapshots
from . import offnode_zfs as oz
from .drivers import Target
from .exclusions import Exclusions
from .offnode_stream import command_output

PREFIX = "ums-archive"
#: Where archive clones are mounted on the node (never inside the mail root).
CLONE_ROOT = "/var/lib/ums-archive"
_CLONE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]*/ums-archive-[0-9]+$")


class ArchiveError(Exception):
    """An archive step failed; the message is for administrators."""


# ----------------------------------------------------------------- what goes in the tar


def members(listing: str, excl: Exclusions) -> tuple[list[str], list[str]]:
    """The tar's members and the mailboxes they hold, from ``find -printf '%y %P\\0'``
    output of the domain folder (three levels deep).

    A mailbox folder (level 1) and its ``Maildir`` (level 2) are opened up: their entries
    are listed one level further and each is kept or left out on its own; anything else
    is a member as a whole (a Maildir++ folder with all its messages, ``cur``/``new``,
    ``maildirsize``…). Maildir++ folders are flat (``.Trash.Old`` lies beside ``.Trash``),
    so leaving out ``.Trash`` leaves out its messages and ``excludes_path`` decides its
    subfolders too.
    """
    kept: list[str] = []
    boxes: set[str] = set()
    for entry in listing.split("\0"):
        kind, _, path = entry.partition(" ")
        parts = path.split("/")
        if not path or ".." in parts or path.startswith("/") or excl.excludes_path(path):
            continue
        if kind == "l" or parts[0] == ".ums-excluded" or ".ums-exclude" in parts[1:2]:
            # A link this high up is a folder or Maildir excluded when the snapshot was
            # taken (backup/exclude_layout.py): its mail is in no snapshot, so in no archive.
            continue
        opened = kind == "d" and (len(parts) == 1 or (len(parts) == 2 and parts[1] == "Maildir"))
        if len(parts) > 1:
            boxes.add(parts[0])
        if not opened:
            kept.append(path)
    return sorted(kept), sorted(boxes)


def folders_of(kept: Iterable[str]) -> dict[str, list[str]]:
    """The Maildir++ folders each mailbox's members hold (``Sent``, ``Archive.2025``),
    as restore forms offer and check them (``.Sent`` under ``<box>/Maildir``; our own
    ``.ums-*`` markers are not folders)."""
    found: dict[str, set[str]] = {}
    for path in kept:
        parts = path.split("/")
        if len(parts) == 3 and parts[1] == "Maildir":
            found.setdefault(parts[0], set())
            name = parts[2]
            if name.startswith(".") and len(name) > 1 and not name.startswith(".ums"):
                found[parts[0]].add(name[1:])
    return {box: sorted(names) for box, names in sorted(found.items())}


def members_by_snapshot(archives: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, list]]:
    """``{snapshot: {mailbox: [folder, ...]}}`` of manifest entries that record folders
    (older entries know only their mailboxes: left out, so nothing is checked for them)."""
    return {
        a["snapshot"]: {box: list(a["folders"].get(box, [])) for box in a.get("mailboxes", [])}
        for a in archives
        if isinstance(a.get("folders"), dict)
    }


def tar_argv(folder: str) -> list[str]:
    """GNU tar of the NUL-separated names on its stdin (relative to ``folder``)."""
    return [
        "tar",
        "-C",
        folder,
        "--numeric-owner",
        # Tiered messages (links into the node's tier, backup/tiering.py) are archived as
        # the messages themselves, so an archive restore needs no tier.
        "--dereference",
        # Every member is its own file (no hard link members): an increment's members
        # are read one by one when a point is assembled (backup/archive_chain.py).
        "--hard-dereference",
        # The list names every folder and file (backup/archive_chain.py): a folder
        # entry brings only itself.
        "--no-recursion",
        "--null",
        "--verbatim-files-from",
        "--files-from=-",
        "-cf",
        "-",
    ]


def find_argv(folder: str) -> list[str]:
    return ["find", folder, "-mindepth", "1", "-maxdepth", "3", "-printf", "%y %P\\0"]


# ------------------------------------------------------------------- reading a snapshot


def clone_name(dataset: str, key: int) -> str:
    return f"{dataset.split('/', 1)[0]}/ums-archive-{int(key)}"


def destroy_clone(conn: Connector, clone: str) -> None:
    """``zfs destroy`` of an archive clone (only names of our pattern); gone is fine."""
    if not _CLONE_RE.match(clone):
        raise ArchiveError(f"refusing to destroy {clone}")
    text = ""
    for attempt in range(20):
        result = conn.run(["zfs", "destroy", "-f", clone])
        text = (result.stderr or result.stdout).strip()
        if result.ok or "does not exist" in text or "could not find" in text:
            conn.run(["rmdir", f"{CLONE_ROOT}/{clone.rsplit('/', 1)[1]}"])
            return
        if "busy" not in text:
            break
        # FUSE closes files asynchronously: zfs-fuse may hold the last ones a moment.
        time.sleep(0.25 * (attempt + 1))
    raise ArchiveError(f"zfs destroy {clone} failed: {text}")


def leftover_clones(conn: Connector, pool: str) -> list[str]:
    """Archive clones a killed pass left in ``pool`` (one pass per node at a time, so
    every one found before a pass is an orphan)."""
    result = conn.run(["zfs", "list", "-H", "-o", "name", "-t", "filesystem", "-r", pool])
    return [n for n in result.stdout.split() if _CLONE_RE.match(n)] if result.ok else []


@contextlib.contextmanager
def snapshot_folder(
    conn: Connector, *, live: str, dataset: str, snapshot: str, key: int
) -> Iterator[str]:
    """The snapshot's files: ``.zfs/snapshot/<name>`` (OpenZFS) or a read-only clone."""
    if snapshots.tier_of(snapshot) is None:
        raise ArchiveError(f"not one of our snapshots: {snapshot!r}")
    folder = f"{live}/.zfs/snapshot/{snapshot}"
    if conn.run(["test", "-d", folder]).ok:
        yield folder
        return
    clone = clone_name(oz.check_dataset(dataset), key)
    mountpoint = f"{CLONE_ROOT}/{clone.rsplit('/', 1)[1]}"
    destroy_clone(conn, clone)  # a killed pass's clone may be of another snapshot
    argv = ["zfs", "clone", "-o", "readonly=on", "-o", f"mountpoint={mountpoint}"]
    result = conn.run([*argv, f"{dataset}@{snapshot}", clone])
    if not result.ok:
        raise ArchiveError(f"zfs clone failed: {(result.stderr or result.stdout).strip()[:500]}")
    conn.run(["zfs", "mount", clone])  # mounted already on most systems: not an error
    try:
        yield mountpoint
    finally:
        destroy_clone(conn, clone)


# ------------------------------------------------------------------------ the target


class _Digest:
    """SHA-256 and size of the plain tar as it passes."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0

    def wrap(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for piece in chunks:
            self.sha.update(piece)
            self.size += len(piece)
            yield piece


def manifest_name(domain_name: str) -> str:
    return drivers.check_name(f"{PREFIX}/{domain_name}/manifest.json")


def read_manifest(driver: Target, domain_name: str) -> dict[str, Any]:
    name = manifest_name(domain_name)
    if name not in driver.list(f"{PREFIX}/{domain_name}"):
        return {"version": 1, "domain": domain_name, "archives": []}
    return json.loads(b"".join(drivers.get_decrypted(driver, name)))


def _write_manifest(driver: Target, manifest: Mapping[str, Any]) -> None:
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    drivers.put_encrypted(driver, manifest_name(str(manifest["domain"])), [data])


def left_out(excl: Exclusions) -> dict[str, list[str]]:
    """What the exclusions leave out, as recorded with each archive."""
    return {"mailboxes": sorted(excl.mailboxes), "folders": sorted(excl.folders)}


def referenced(manifest: Mapping[str, Any]) -> set[str]:
    """Every object the manifest names (tars, indexes, itself)."""
    names = {manifest_name(str(manifest["domain"]))}
    for entry in manifest["archives"]:
        names.update(chain.objects_of(entry))
    return names


def _previous_index(driver: Target, archives: list[dict[str, Any]], full_every: int) -> Any:
    """The index the next archive is an increment of, or ``None`` for a new full one
    (the chain has ``full_every`` archives, or its newest has no index)."""
    if not archives or full_every <= 1:
        return None
    last = archives[-1]
    if not last.get("index") or len(chain.chains(archives)[-1]) >= full_every:
        return None
    try:
        return chain.read_index(driver, last)
    except (drivers.TargetError, ValueError):
        return None  # unreadable: a new full archive starts a sound chain


def archive_to_target(
    source: Connector,
    driver: Target,
    *,
    live: str,
    dataset: str,
    domain_name: str,
    excl: Exclusions,
    keep: int,
    key: int,
    full_every: int = 1,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Archive the dataset's newest snapshot, less what ``excl`` leaves out, unless the
    newest archive already holds that snapshot with the same exclusions: a full archive
    every ``full_every`` passes, an increment of the chain otherwise; the newest ``keep``
    chains are kept, each whole."""
    now = now or timezone.now()
    manifest = read_manifest(driver, domain_name)
    archives = manifest["archives"]
    listed = set(driver.list(f"{PREFIX}/{domain_name}"))
    leftovers = sorted(listed - referenced(manifest))
    for name in leftovers:  # objects of a pass cut before its manifest was written
        driver.delete(name)
    done = {"sent": None, "bytes": 0, "leftovers": leftovers, "manifest": manifest}
    src = oz.list_snaps(source, dataset) or []
    if not src:
        return done
    newest = src[-1]
    last = archives[-1] if archives else None
    if last and last["guid"] == newest.guid and last["left_out"] == left_out(excl):
        return done
    previous = _previous_index(driver, archives, full_every)
    stamp = f"{now.astimezone(datetime.UTC):%Y%m%dT%H%M%SZ}"
    name = drivers.check_name(f"{PREFIX}/{domain_name}/{stamp}-{newest.name}.tar")
    digest = _Digest()
    with snapshot_folder(source, live=live, dataset=dataset, snapshot=newest.name, key=key) as f:
        kept, boxes = members(_run_find(source, find_argv(f)), excl)
        dirs, files = chain.tree(_run_find(source, chain.tree_argv(f)), kept)
        copy, index = chain.plan(dirs, files, name, previous)
        names = b"".join(p.encode() + b"\0" for p in copy)
        tar = command_output(source, tar_argv(f), stdin=names)
        stored = drivers.put_encrypted(driver, name, digest.wrap(tar))
    chain.write_index(driver, chain.index_name(name), index)
    size = digest.size
    archives.append(
        {
            "name": name,
            "id": name,
            "kind": chain.INCREMENTAL if previous else chain.FULL,
            "chain": archives[-1].get("chain") if previous else name,
            "index": chain.index_name(name),
            "snapshot": newest.name,
            "guid": newest.guid,
            "bytes": size,
            "stored_bytes": stored,
            "sha256": digest.sha.hexdigest(),
            "at": now.isoformat(),
            "mailboxes": boxes,
            "folders": folders_of(kept),
            "entries": len(kept),
            "files": len(files),
            "files_copied": len(copy) - (0 if previous else len(dirs)),
            "left_out": left_out(excl),
        }
    )
    grouped = chain.chains(archives)
    dropped = [e for c in grouped[:-keep] for e in c] if len(grouped) > keep else []
    manifest["archives"] = [e for c in grouped[-keep:] for e in c]
    _write_manifest(driver, manifest)  # the commit point
    for old in dropped:  # whole chains only: no kept archive depends on them
        for obj in chain.objects_of(old):
            driver.delete(obj)
    sent = {
        "snapshot": newest.name,
        "archive": name,
        "sha256": digest.sha.hexdigest(),
        "kind": archives[-1]["kind"],
    }
    return {**done, "sent": sent, "bytes": size}


def _run_find(conn: Connector, argv: list[str]) -> str:
    found = conn.run(argv)
    if not found.ok:
        raise ArchiveError(f"find failed: {found.stderr.strip()[:500]}")
    return found.stdout


def delete_archives(driver: Target, domain_name: str) -> int:
    """Every object of the domain's archives on the target, manifest first (so a cut
    delete leaves unreferenced leftovers, never a manifest naming missing objects)."""
    names = driver.list(f"{PREFIX}/{domain_name}")
    manifest = manifest_name(domain_name)
    if manifest in names:
        driver.delete(manifest)
    for name in names:
        if name != manifest:
            driver.delete(name)
    return len(names)


# ------------------------------------------------------- permanent deletion of a mailbox


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of chunks (tarfile reads the decrypted archive)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


class _Sink:
    """What tarfile writes, handed on as chunks."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _top(name: str) -> str:
    parts = [p for p in name.split("/") if p and p != "."]
    return parts[0].lower() if parts else ""


def without_mailbox(chunks: Iterable[bytes], local_part: str) -> Iterator[bytes]:
    """The tar ``chunks`` less every member under ``<local_part>/``, streamed member by
    member (a member's content passes through memory once, never the whole archive)."""
    sink = _Sink()
    reader = io.BufferedReader(_ChunkReader(chunks), 1024 * 1024)
    with (
        tarfile.open(fileobj=reader, mode="r|") as source,
        tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as dest,
    ):
        for member in source:
            if _top(member.name) == local_part.lower():
                continue
            dest.addfile(member, source.extractfile(member) if member.isreg() else None)
            yield sink.take()
    yield sink.take()


def rewrite_without(driver: Target, domain_name: str, local_part: str) -> list[str]:
    """Rewrite each archive holding ``local_part`` without it (its tar and its index);
    the archives rewritten.

    Same commit point as a pass: the new objects first, then the manifest naming them,
    then the old objects are deleted. Run again, it finds nothing left to rewrite (and
    deletes what a cut run wrote before its manifest). Indexes name archives by ``id``,
    which a rewrite keeps, so the chain's other indexes stay valid."""
    manifest = read_manifest(driver, domain_name)
    for name in sorted(set(driver.list(f"{PREFIX}/{domain_name}")) - referenced(manifest)):
        driver.delete(name)
    key = local_part.lower()
    old_names, rewritten = [], []
    for entry in manifest["archives"]:
        if key not in {m.lower() for m in entry.get("mailboxes", [])}:
            continue
        stem = entry["name"].removesuffix(".tar").split("-purged", 1)[0]
        name = drivers.check_name(f"{stem}-purged{secrets.token_hex(4)}.tar")
        digest = _Digest()
        plain = drivers.get_decrypted(driver, entry["name"])
        stored = drivers.put_encrypted(driver, name, digest.wrap(without_mailbox(plain, key)))
        if entry.get("index"):
            index = chain.read_index(driver, entry)
            for part in ("dirs", "files"):
                index[part] = {p: v for p, v in index[part].items() if _top(p) != key}
            chain.write_index(driver, chain.index_name(name), index)
        old_names.extend(chain.objects_of(entry))
        entry.setdefault("id", entry["name"])
        entry.update(
            name=name,
            bytes=digest.size,
            stored_bytes=stored,
            sha256=digest.sha.hexdigest(),
            mailboxes=[m for m in entry["mailboxes"] if m.lower() != key],
            folders={b: f for b, f in entry.get("folders", {}).items() if b.lower() != key},
        )
        if entry.get("index"):
            entry["index"] = chain.index_name(name)
        rewritten.append(name)
    if rewritten:
        _write_manifest(driver, manifest)  # the commit point
        for name in old_names:
            driver.delete(name)
    return rewritten
