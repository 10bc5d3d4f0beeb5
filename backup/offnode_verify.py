"""Verification of off-node copies on a target: is every kept object readable today?

A copy's objects are otherwise read only on the day they are needed (restore, fetch,
rebuild). This re-reads them on a schedule, touching no node and writing nothing: each
object the domain's manifest names is downloaded, decrypted (AES-GCM: one flipped byte
fails its chunk's tag) and hashed as it streams past, 1 MiB at a time, and its SHA-256
and size compared with the manifest's. For Maildir archives, each tar must also list
(``tarfile`` in stream mode), and every file each index names must be a member of the
chain's tar the index says holds it, so every kept point can be assembled.

Each check returns the errors found, each naming the object; an empty list is a pass.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from typing import Any

from . import archive_chain as chain
from . import crypto, drivers, offnode, offnode_archive
from .drivers import Target

#: Errors listed per copy before the rest are counted (the message stays readable).
MAX_ERRORS = 5


class _Counted:
    """SHA-256 and size of what streams through."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0

    def wrap(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for piece in chunks:
            self.sha.update(piece)
            self.size += len(piece)
            yield piece


def _read_error(name: str, exc: Exception) -> str:
    if isinstance(exc, crypto.DecryptionError):
        return f"{name}: cannot be decrypted ({exc})"
    if isinstance(exc, tarfile.TarError):
        return f"{name}: not a readable tar ({exc})"
    return f"{name}: cannot be read ({exc})"


def _compare(name: str, seen: _Counted, entry: dict[str, Any]) -> list[str]:
    if seen.sha.hexdigest() != entry.get("sha256") or seen.size != entry.get("bytes"):
        return [f"{name}: SHA-256 or size does not match the manifest"]
    return []


def _manifest(driver: Target, name: str, listed: set[str]) -> tuple[Any, list[str]]:
    if name not in listed:
        return None, [f"{name}: missing"]
    try:
        return json.loads(b"".join(drivers.get_decrypted(driver, name))), []
    except (drivers.TargetError, crypto.DecryptionError, ValueError) as exc:
        return None, [_read_error(name, exc)]


def verify_streams(driver: Target, domain_name: str, stats: dict[str, int]) -> list[str]:
    """The errors of the domain's ``zfs send`` stream copy (every chain's objects)."""
    listed = set(driver.list(f"{offnode.PREFIX}/{domain_name}"))
    manifest, errors = _manifest(driver, offnode.manifest_name(domain_name), listed)
    if manifest is None:
        return errors
    for obj in (o for c in manifest.get("chains", []) for o in c.get("objects", [])):
        errors += _check_object(driver, obj, listed, stats)
    return errors


def _check_object(
    driver: Target, entry: dict[str, Any], listed: set[str], stats: dict[str, int]
) -> list[str]:
    name = entry["name"]
    if name not in listed:
        return [f"{name}: missing"]
    seen = _Counted()
    try:
        for _piece in seen.wrap(drivers.get_decrypted(driver, name)):
            pass
    except (drivers.TargetError, crypto.DecryptionError) as exc:
        return [_read_error(name, exc)]
    finally:
        stats["objects"] = stats.get("objects", 0) + 1
        stats["bytes"] = stats.get("bytes", 0) + seen.size
    return _compare(name, seen, entry)


def verify_archives(driver: Target, domain_name: str, stats: dict[str, int]) -> list[str]:
    """The errors of the domain's Maildir archives: each tar (hash, size, a listing),
    each index (readable, every file it names in the chain's tars)."""
    listed = set(driver.list(f"{offnode_archive.PREFIX}/{domain_name}"))
    manifest, errors = _manifest(driver, offnode_archive.manifest_name(domain_name), listed)
    if manifest is None:
        return errors
    for group in chain.chains(manifest.get("archives", [])):
        members: dict[str, set[str] | None] = {}
        for entry in group:
            members[chain.entry_id(entry)], found = _tar_members(driver, entry, listed, stats)
            errors += found
        for entry in group:
            if entry.get("index"):
                errors += _check_index(driver, entry, members, listed)
    return errors


def _tar_members(
    driver: Target, entry: dict[str, Any], listed: set[str], stats: dict[str, int]
) -> tuple[set[str] | None, list[str]]:
    """The regular files the archive's tar lists (``None`` when it cannot be read)."""
    name = entry["name"]
    if name not in listed:
        return None, [f"{name}: missing"]
    seen = _Counted()
    names: set[str] = set()
    reader = io.BufferedReader(
        offnode_archive._ChunkReader(seen.wrap(drivers.get_decrypted(driver, name))),
        1024 * 1024,
    )
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            names.update(m.name for m in tar if m.isreg())
        while reader.read(1024 * 1024):  # past the tar's end blocks: the whole object
            pass
    except (drivers.TargetError, crypto.DecryptionError, tarfile.TarError, OSError) as exc:
        return None, [_read_error(name, exc)]
    finally:
        stats["objects"] = stats.get("objects", 0) + 1
        stats["bytes"] = stats.get("bytes", 0) + seen.size
    errors = _compare(name, seen, entry)
    return (None if errors else names), errors


def _check_index(
    driver: Target,
    entry: dict[str, Any],
    members: dict[str, set[str] | None],
    listed: set[str],
) -> list[str]:
    name = entry["index"]
    if name not in listed:
        return [f"{name}: missing"]
    try:
        index = json.loads(gzip.decompress(b"".join(drivers.get_decrypted(driver, name))))
        paths = list(index["files"])
    except (drivers.TargetError, crypto.DecryptionError, OSError, ValueError, KeyError) as exc:
        return [_read_error(name, exc)]
    absent = 0
    for path in paths:
        try:
            archive_id, stored = chain.held_in(index, path)
        except (IndexError, TypeError):
            absent += 1
            continue
        held = members.get(archive_id)
        if held is None and archive_id in members:
            continue  # that tar failed its own check, reported once above
        if held is None or stored not in held:
            absent += 1
    if absent:
        return [f"{name}: {absent} of its {len(paths)} files are in no tar of the chain"]
    return []


def verify_copy(driver: Target, kind: str, domain_name: str, stats: dict[str, int]) -> list[str]:
    """The errors of one copy (``OffnodeCopy.TARGET`` streams or ``ARCHIVE``)."""
    from .models_offnode import OffnodeCopy

    if kind == OffnodeCopy.ARCHIVE:
        return verify_archives(driver, domain_name, stats)
    return verify_streams(driver, domain_name, stats)


def summary(errors: list[str]) -> str:
    """The stored message: the first errors, and how many more."""
    text = "; ".join(errors[:MAX_ERRORS])
    if len(errors) > MAX_ERRORS:
        text += f"; and {len(errors) - MAX_ERRORS} more"
    return text[:1000]
