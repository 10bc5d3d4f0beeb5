"""Controller dumps on backup targets: layout, staging, upload, manifest, retention.

A dump named ``ums-dump-<UTC time>-j<job id>`` is a folder ``dumps/<name>/`` on a target::

    database.pgdump     pg_dump --format=custom of the controller database
    keys.json           every generated key (see backup.dumps_content.keys_snapshot)
    settings.json       the non-secret configuration
    certificates.tar    the load balancers' certificate store (when there is one)
    nodes/<id>-<host>.tar   each node's rendered configuration
    MANIFEST            name, time, versions, and sha256 + size of every object above

Every object, the manifest included, is encrypted with the backup key before it leaves
the controller (:mod:`backup.crypto`); the checksums are of the stored ciphertext, so a
dump can be checked without the key and the key then proves the content (AES-GCM).

**The manifest is written last: it is the commit point.** A dump without one was cut
short (worker killed, target full): it is not listed, never restored, and its objects are
deleted by the next run. Retention deletes a dump's manifest first and then its objects,
so a run killed while pruning also leaves only a partial dump for the next run to clean.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils.translation import gettext_noop

from . import crypto, dumps_content, dumps_pg
from .drivers import Target, TargetError

PREFIX = "dumps"
MANIFEST = "MANIFEST"
FORMAT = 1
NAME_RE = re.compile(r"^ums-dump-\d{8}T\d{6}Z-j\d+$")
_READ = 1024 * 1024


class DumpError(Exception):
    """A dump could not be made, found or verified; the message is for administrators."""


def dump_name(created_at: datetime, job_id: int) -> str:
    return f"ums-dump-{created_at.strftime('%Y%m%dT%H%M%SZ')}-j{job_id}"


def object_key(name: str, relative: str) -> str:
    return f"{PREFIX}/{name}/{relative}"


@dataclass
class StagedObject:
    name: str  # relative to the dump folder
    path: Path  # ciphertext on the controller's disk
    sha256: str
    size: int
    plain_size: int
    extras: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "size": self.size,
            "plain_size": self.plain_size,
            **self.extras,
        }


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while piece := handle.read(_READ):
            yield piece


def staging_root() -> Path:
    return Path(getattr(settings, "UMS_DUMP_STAGING_DIR", "") or Path(settings.VAR_DIR) / "dumps")


class Staging:
    """A private folder holding one dump's encrypted objects until every target has them.

    Only ciphertext is written here: ``pg_dump`` streams straight into the cipher.
    Folders of earlier runs that died are removed when the next one starts.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.root = staging_root()
        self.dir = self.root / name
        self.objects: list[StagedObject] = []

    def __enter__(self) -> Staging:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Only folders named like a dump: the staging folder may be shared with others.
        for old in self.root.iterdir():
            if old.is_dir() and NAME_RE.match(old.name):
                shutil.rmtree(old, ignore_errors=True)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def add(self, name: str, chunks: Iterable[bytes], **extras: Any) -> StagedObject:
        path = self.dir / f"{len(self.objects):05d}.enc"
        digest, size, plain = hashlib.sha256(), 0, 0

        def counted() -> Iterator[bytes]:
            nonlocal plain
            for piece in chunks:
                plain += len(piece)
                yield piece

        with open(path, "wb") as handle:
            for piece in crypto.encrypt_stream(counted()):
                handle.write(piece)
                digest.update(piece)
                size += len(piece)
        staged = StagedObject(name, path, digest.hexdigest(), size, plain, extras)
        self.objects.append(staged)
        return staged


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True, default=str).encode()


def database_versions() -> tuple[int, str]:
    """(server major, server version text) of the controller database."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        num = int(cursor.fetchone()[0])
        cursor.execute("SHOW server_version")
        text = cursor.fetchone()[0].split()[0]
    return dumps_pg.server_major(num), text


def build(
    stage: Staging, *, job_id: int, created_at: datetime, say: Callable[..., None]
) -> dict[str, Any]:
    """Stage every part of a dump; the manifest (without ``objects`` yet)."""
    major, server_text = database_versions()
    tool, tool_text = dumps_pg.find_tool("pg_dump", major)
    say(
        gettext_noop("Dumping the controller database (PostgreSQL %(server)s) with %(tool)s"),
        server=server_text,
        tool=str(tool),
    )
    env = dumps_pg.libpq_env(settings.DATABASES["default"])
    try:
        stage.add("database.pgdump", dumps_pg.dump_stream(tool, env), kind="database")
    except dumps_pg.ToolError as exc:
        raise DumpError(str(exc)) from exc
    stage.add("keys.json", [_json(dumps_content.keys_snapshot())], kind="keys")
    stage.add("settings.json", [_json(dumps_content.settings_snapshot())], kind="settings")
    certs = dumps_content.certificate_store()
    if certs is not None:
        stage.add("certificates.tar", [certs], kind="certificates")
    failed: list[dict[str, str]] = []

    def node_failed(node: Any, exc: Exception) -> None:
        failed.append({"node": node.hostname, "error": str(exc)[:500]})
        say(
            gettext_noop("Node %(node)s left out: its configuration does not render: %(error)s"),
            node=node.hostname,
            error=str(exc)[:500],
        )

    for name, data, extras in dumps_content.node_parts(node_failed):
        stage.add(name, [data], **extras)
    say(gettext_noop("Staged %(count)s objects"), count=len(stage.objects))
    return {
        "format": FORMAT,
        "name": stage.name,
        "created_at": created_at.isoformat(),
        "job": job_id,
        "controller": socket.gethostname(),
        "backup_key_id": crypto.key_id(crypto.key_bytes()).hex(),
        "postgres": {"server": server_text, "pg_dump": tool_text},
        "nodes_failed": failed,
    }


def full_manifest(manifest: dict[str, Any], objects: list[StagedObject]) -> dict[str, Any]:
    described = [o.describe() for o in objects]
    return {
        **manifest,
        "objects": described,
        "total_size": sum(o["size"] for o in described),
    }


# --------------------------------------------------------------------- on a target


def has_manifest(driver: Target, name: str) -> bool:
    return object_key(name, MANIFEST) in driver.list(f"{PREFIX}/{name}")


def upload(driver: Target, manifest: dict[str, Any], objects: list[StagedObject]) -> int:
    """Write every object, drop leftovers of an earlier attempt, then the manifest; bytes."""
    name = manifest["name"]
    written = 0
    for obj in objects:
        written += driver.put(object_key(name, obj.name), _file_chunks(obj.path))
    wanted = {object_key(name, o.name) for o in objects}
    for leftover in driver.list(f"{PREFIX}/{name}"):
        if leftover not in wanted:
            driver.delete(leftover)
    body = crypto.encrypt_stream([_json(manifest)])
    written += driver.put(object_key(name, MANIFEST), body)
    return written


@dataclass
class Listing:
    """The dumps on one target: complete ones (by name, their manifest), unreadable
    manifests (by name, why) and partial ones (no manifest)."""

    complete: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    partial: dict[str, list[str]] = field(default_factory=dict)


def read_listing(driver: Target) -> Listing:
    groups: dict[str, list[str]] = {}
    for key in driver.list(PREFIX):
        parts = key.split("/")
        if len(parts) >= 3 and parts[0] == PREFIX and NAME_RE.match(parts[1]):
            groups.setdefault(parts[1], []).append(key)
    listing = Listing()
    for name, keys in sorted(groups.items()):
        if object_key(name, MANIFEST) not in keys:
            listing.partial[name] = keys
            continue
        try:
            raw = b"".join(crypto.decrypt_stream(driver.get(object_key(name, MANIFEST))))
            listing.complete[name] = json.loads(raw)
        except (crypto.DecryptionError, ValueError, TargetError) as exc:
            listing.unreadable[name] = str(exc)
    return listing


def remove_partial(driver: Target, listing: Listing, keep: set[str]) -> list[str]:
    """Delete the objects of dumps that never got a manifest (``keep``: still being made)."""
    removed = []
    for name, keys in listing.partial.items():
        if name in keep:
            continue
        for key in keys:
            driver.delete(key)
        removed.append(name)
    return removed


def apply_retention(driver: Target, listing: Listing, keep: int) -> list[str]:
    """Keep the ``keep`` newest complete dumps; delete older ones, manifest first."""
    ordered = sorted(listing.complete, key=lambda n: listing.complete[n].get("created_at", ""))
    doomed = ordered[: max(0, len(ordered) - keep)]
    for name in doomed:
        driver.delete(object_key(name, MANIFEST))
        for key in driver.list(f"{PREFIX}/{name}"):
            driver.delete(key)
        del listing.complete[name]
    return doomed


def _sha_of(chunks: Iterable[bytes], sink: Any = None) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for piece in chunks:
        digest.update(piece)
        size += len(piece)
        if sink is not None:
            sink.write(piece)
    return digest.hexdigest(), size


def check_object(driver: Target, name: str, entry: dict[str, Any], sink: Any = None) -> str:
    """ "" when the stored object matches the manifest, else what is wrong."""
    key = object_key(name, entry["name"])
    try:
        digest, size = _sha_of(driver.get(key), sink)
    except TargetError as exc:
        return f"{entry['name']}: cannot be read ({exc})"
    if digest != entry["sha256"] or size != entry["size"]:
        return (
            f"{entry['name']}: checksum mismatch (manifest sha256 {entry['sha256'][:16]}…, "
            f"{entry['size']} bytes; stored sha256 {digest[:16]}…, {size} bytes)"
        )
    return ""


def verify(driver: Target, name: str, manifest: dict[str, Any]) -> list[str]:
    """Every object of the dump read back and checked against the manifest."""
    problems = []
    for entry in manifest.get("objects", []):
        problem = check_object(driver, name, entry)
        if problem:
            problems.append(problem)
    return problems
