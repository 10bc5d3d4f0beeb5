"""Incremental Maildir archives: the chain of a full archive and its increments.

Maildir message files never change once written, only their names do (flags change the
``:2,...`` suffix, a read message moves from ``new`` to ``cur``). So a message is known
by its mailbox, base name (before ``:2,``) and size, and an increment holds only the files
the chain does not hold yet: new messages, plus every other file (``maildirsize``,
``courierimapuiddb``, keyword files…: small and mutable), copied each time.

Each archive (full or increment) has an **index** object beside its tar: the whole file
tree of the domain at that point (every directory with its mode, owner and time; every
file with the archive that holds its content and its name in that tar). A point is
restored by reading its index and the chain's tars in order, renaming each needed member
to the point's name: the point's exact tree, deleted messages absent, flags as they were.
Archives refer to each other by ``id`` (the name the object was first stored under), so
a purge that rewrites an object under a new name leaves the other indexes valid.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from . import drivers
from .drivers import Target

FULL, INCREMENTAL = "full", "incremental"
MESSAGE_FOLDERS = ("cur", "new")


def tree_argv(folder: str) -> list[str]:
    """Every entry under ``folder`` with what the index records; ``-L``: a tiered message
    (a link into the node's tier) is listed, and archived, as the message itself."""
    return ["find", "-L", folder, "-mindepth", "1", "-printf", "%Y %s %m %U %G %T@ %P\\0"]


def tree(listing: str, kept: Iterable[str]) -> tuple[dict[str, list[int]], dict[str, int]]:
    """``(dirs, files)`` of the archive: ``{path: [mode, uid, gid, mtime]}`` and
    ``{path: size}`` of every entry at or under a kept member
    (:func:`backup.offnode_archive.members`), and the folders leading to them."""
    keep = set(kept)
    leading = set()
    for path in keep:
        parts = path.split("/")
        leading.update("/".join(parts[:i]) for i in range(1, len(parts)))
    dirs: dict[str, list[int]] = {}
    files: dict[str, int] = {}
    for entry in listing.split("\0"):
        fields = entry.split(" ", 6)
        if len(fields) != 7:
            continue
        kind, size, mode, uid, gid, mtime, path = fields
        parts = path.split("/")
        if ".." in parts or path.startswith("/") or "" in parts:
            continue
        inside = path in leading or any(
            "/".join(parts[:i]) in keep for i in range(1, len(parts) + 1)
        )
        if not inside:
            continue
        if kind == "d":
            dirs[path] = [int(mode, 8), int(uid), int(gid), int(float(mtime))]
        elif kind == "f":
            files[path] = int(size)
    return dirs, files


def message_key(path: str, size: int) -> str | None:
    """What identifies a message across renames (its mailbox, base name and size), or
    ``None`` for other files. The mailbox is part of it so that two mailboxes never share
    a copy on the strength of a name alone."""
    parts = path.split("/")
    if len(parts) < 3 or parts[-2] not in MESSAGE_FOLDERS:
        return None
    return f"{parts[0]}\0{parts[-1].split(':2,', 1)[0]}\0{int(size)}"


def plan(
    dirs: Mapping[str, list[int]],
    files: Mapping[str, int],
    archive_id: str,
    previous: Mapping[str, Any] | None,
) -> tuple[list[str], dict[str, Any]]:
    """The tar's members and the new index: with ``previous`` (the chain's newest index)
    only files it does not hold by message key, else (a full archive) everything.

    The index's ``files`` map a path to ``[archive, size]`` (the content is in that
    archive's tar under the same path) or ``[archive, size, stored name]`` (a renamed
    message); ``archive`` numbers an id in ``archives``."""
    ids: list[str] = list(previous["archives"]) if previous else []
    held: dict[str, list[Any]] = {}
    for path, value in (previous or {}).get("files", {}).items():
        key = message_key(path, value[1])
        if key is not None:
            held.setdefault(key, [value[0], value[2] if len(value) > 2 else path])
    ids.append(archive_id)
    own = len(ids) - 1
    index: dict[str, list] = {}
    copy: list[str] = [] if previous else sorted(dirs)
    for path, size in sorted(files.items()):
        key = message_key(path, size)
        if key is not None and key in held:
            number, stored = held[key]
            index[path] = [number, size] if stored == path else [number, size, stored]
        else:
            copy.append(path)
            index[path] = [own, size]
    return sorted(copy), {"version": 1, "archives": ids, "dirs": dict(dirs), "files": index}


def held_in(index: Mapping[str, Any], path: str) -> tuple[str, str]:
    """``(archive id, name in its tar)`` of a file of the index."""
    value = index["files"][path]
    return index["archives"][value[0]], value[2] if len(value) > 2 else path


def index_name(tar_name: str) -> str:
    return drivers.check_name(tar_name.removesuffix(".tar") + ".index.json.gz")


def write_index(driver: Target, name: str, index: Mapping[str, Any]) -> int:
    """Compressed before encryption: paths repeat, and an index lists the whole tree."""
    data = gzip.compress(json.dumps(index, sort_keys=True).encode(), mtime=0)
    return drivers.put_encrypted(driver, name, [data])


def read_index(driver: Target, entry: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(gzip.decompress(b"".join(drivers.get_decrypted(driver, entry["index"]))))


def entry_id(entry: Mapping[str, Any]) -> str:
    return str(entry.get("id") or entry["name"])


def chains(archives: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The archives grouped by chain, oldest first (an archive from before increments
    is a chain of its own)."""
    grouped: list[list[dict[str, Any]]] = []
    for entry in archives:
        chain = entry.get("chain") or entry_id(entry)
        if grouped and (grouped[-1][0].get("chain") or entry_id(grouped[-1][0])) == chain:
            grouped[-1].append(entry)
        else:
            grouped.append([entry])
    return grouped


def objects_of(entry: Mapping[str, Any]) -> list[str]:
    """The target objects an archive entry owns."""
    return [entry["name"], *([entry["index"]] if entry.get("index") else [])]


def under(path: str, prefix: str | None) -> bool:
    return prefix is None or path == prefix or path.startswith(f"{prefix}/")


def needs_assembly(entry: Mapping[str, Any]) -> bool:
    """An increment: its tar alone is not the point's tree."""
    return entry.get("kind") == INCREMENTAL


def point_chunks(
    driver: Target,
    archives: list[dict[str, Any]],
    entry: Mapping[str, Any],
    only: str | None = None,
) -> Iterator[bytes]:
    """The plain tar of the point ``entry`` (``only``: the entries under that path),
    assembled from its index and the chain's tars, each checked against its SHA-256.

    Raises :class:`drivers.TargetError` when a tar does not match its manifest or lacks a
    member the index names (then the stream stops before its end, and a ``tar -x`` fed
    from it fails)."""
    from .offnode_archive import _Sink

    index = read_index(driver, entry)
    wanted: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in index["files"]:
        if under(path, only):
            aid, stored = held_in(index, path)
            wanted[aid][stored].append(path)
    sink = _Sink()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as dest:
        for path, (mode, uid, gid, mtime) in sorted(index["dirs"].items()):
            if under(path, only) or (only is not None and under(only, path)):
                info = tarfile.TarInfo(path)
                info.type, info.mode, info.uid, info.gid, info.mtime = (
                    tarfile.DIRTYPE,
                    mode & 0o7777,
                    uid,
                    gid,
                    mtime,
                )
                dest.addfile(info)
        yield sink.take()
        for source_entry in archives:
            need = wanted.pop(entry_id(source_entry), None)
            if need:
                yield from _copy_members(driver, source_entry, need, dest, sink)
        if wanted:
            raise drivers.TargetError(
                f"the chain of {entry['name']} lacks archives {sorted(wanted)[:3]}"
            )
    yield sink.take()


def _copy_members(
    driver: Target,
    entry: Mapping[str, Any],
    need: dict[str, list[str]],
    dest: tarfile.TarFile,
    sink: Any,
) -> Iterator[bytes]:
    from .offnode_archive import _ChunkReader, _Digest

    digest = _Digest()
    reader = io.BufferedReader(
        _ChunkReader(digest.wrap(drivers.get_decrypted(driver, entry["name"]))), 1024 * 1024
    )
    with tarfile.open(fileobj=reader, mode="r|") as source:
        for member in source:
            paths = need.pop(member.name, None)
            if not paths or not member.isreg():
                continue
            if len(paths) == 1:
                member.name = paths[0]
                dest.addfile(member, source.extractfile(member))
            else:  # one message under several names (a copy between folders): small
                data = source.extractfile(member).read()
                for path in paths:
                    member.name = path
                    dest.addfile(member, io.BytesIO(data))
            yield sink.take()
    while reader.read(1024 * 1024):  # the rest, so the whole tar is hashed
        pass
    if digest.sha.hexdigest() != entry["sha256"] or digest.size != entry["bytes"]:
        raise drivers.TargetError(f"the archive {entry['name']} does not match its manifest")
    if need:
        raise drivers.TargetError(
            f"the archive {entry['name']} lacks {len(need)} files its index names"
        )


def plain_chunks(
    driver: Target,
    archives: list[dict[str, Any]],
    entry: Mapping[str, Any],
    only: str | None = None,
) -> Iterator[bytes]:
    """The plain tar of the point ``entry``: a full archive's own tar (checked by the
    reader against ``sha256``), or an increment's point assembled from its chain."""
    if needs_assembly(entry):
        return point_chunks(driver, archives, entry, only)
    return drivers.get_decrypted(driver, entry["name"])
