"""Sweep what killed restore and archive runs left on an IMAP node: clones no live job
owns, and empty folders under ``/var/lib/ums-restore`` and ``/var/lib/ums-archive``.

A job that is killed (worker or sshd) resumes and cleans up after itself; one that is
given up, or whose clean-up was cut, can leave its read-only clone (which pins its
snapshot: pruning cannot destroy a snapshot with a dependent clone) and the clone's
mountpoint folder (ZFS leaves it), one per killed run. Level-triggered: each snapshot
pass of the node (:func:`backup.jobs.snapshot_node`, scheduled by
``backup.schedule_snapshots``) sweeps first, so what a sweep frees is pruned in the same
pass. Ownership is decided by :mod:`.leftover_owners` from the job records.

Node commands are argument lists; every name is matched against our own patterns
before it reaches a path or a ``zfs`` command. A clone still mounted is unmounted with
:func:`deploy.services.zfs.release.unmount_releasing` (never ``zfs unmount -f``:
zfs-fuse then detaches lazily and its pool hangs later), which stops a killed run's
orphaned reader first. Idempotent: two sweeps at once destroy each clone once (only a
destroy that succeeded is counted and audited).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from deploy.connector.base import Connector
from deploy.services.zfs.release import UnmountFailed, unmount_releasing
from servers.models import Node
from ums import auditing

from . import leftover_owners as owners
from .offnode_archive import CLONE_ROOT as ARCHIVE_ROOT
from .restore_run import CLONE_ROOT as RESTORE_ROOT

ROOTS = (RESTORE_ROOT, ARCHIVE_ROOT)
AUDIT_ACTION = "backup_clone.swept"

Say = Callable[..., None]


@dataclass(frozen=True)
class Clone:
    name: str
    origin: str
    mountpoint: str
    mounted: bool


@dataclass(frozen=True)
class Folder:
    """An empty folder right under one of the roots, and when it last changed."""

    root: str
    name: str
    modified: datetime.datetime
    path: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", f"{self.root}/{self.name}")


def sweep(
    conn: Connector,
    node: Node,
    pool: str,
    *,
    say: Say = lambda msgid, **values: None,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Destroy the clones and remove the empty folders no live job owns; the counts."""
    now = now or timezone.now()
    grace = owners.grace()
    clones, mountpoints = list_datasets(conn, pool)
    ours = {c.name: (c, o) for c in clones if (o := owners.clone_owner(c.name)) is not None}
    folders = [f for root in ROOTS for f in empty_folders(conn, root)]
    folder_owners = {f.path: owners.folder_owner(f.root, f.name, pool) for f in folders}
    jobs, live_kinds = owners.jobs_of(
        [o for _c, o in ours.values()] + [o for o in folder_owners.values() if o is not None]
    )
    created = creation_times(conn, list(ours))
    report: dict[str, Any] = {"clones": 0, "folders": 0, "kept": 0, "errors": []}

    for name, (clone, owner) in sorted(ours.items()):
        verdict = owners.decide(
            owner, jobs.get(owner.job_id), appeared_at=created.get(name), now=now, grace=grace
        )
        if verdict != owners.SWEEP:
            report["kept"] += 1
            continue
        try:
            destroyed = destroy(conn, clone)
        except SweepError as exc:
            report["errors"].append(str(exc))
            say(gettext_noop("could not destroy %(clone)s: %(error)s"), clone=name, error=str(exc))
            continue
        mountpoints.discard(clone.mountpoint)
        if destroyed:
            report["clones"] += 1
            _audit(node, clone, owner, jobs.get(owner.job_id))
            say(
                gettext_noop("destroyed %(clone)s, left behind by job %(job)s"),
                clone=name,
                job=owner.job_id,
            )

    for folder in folders:
        owner = folder_owners[folder.path]
        if owner is None or folder.path in mountpoints:
            continue
        job = jobs.get(owner.job_id) if owner.job_id is not None else None
        verdict = owners.decide(
            owner,
            job,
            appeared_at=folder.modified,
            any_live=bool(live_kinds & set(owner.kinds)),
            now=now,
            grace=grace,
        )
        if verdict != owners.SWEEP:
            continue
        # rmdir removes nothing but an empty folder, and no mountpoint in use.
        if conn.run(["rmdir", "--", folder.path]).ok:
            report["folders"] += 1
            say(gettext_noop("removed the empty folder %(folder)s"), folder=folder.path)
    return report


class SweepError(Exception):
    """A leftover could not be removed now; the next sweep tries again."""


def list_datasets(conn: Connector, pool: str) -> tuple[list[Clone], set[str]]:
    """Every file system of ``pool`` that is a clone, and every mountpoint in use."""
    columns = "name,origin,mountpoint,mounted"
    result = conn.run(["zfs", "list", "-H", "-o", columns, "-t", "filesystem", "-r", pool])
    if not result.ok:
        raise SweepError(f"zfs list failed: {(result.stderr or result.stdout).strip()[:300]}")
    clones: list[Clone] = []
    mountpoints: set[str] = set()
    for line in result.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) != 4:
            continue
        name, origin, mountpoint, mounted = fields
        mountpoints.add(mountpoint)
        if origin not in ("", "-"):
            clones.append(Clone(name, origin, mountpoint, mounted == "yes"))
    return clones, mountpoints


def creation_times(conn: Connector, names: list[str]) -> dict[str, datetime.datetime]:
    """When each dataset was created (``zfs get -p``: seconds since the epoch)."""
    if not names:
        return {}
    result = conn.run(["zfs", "get", "-H", "-p", "-o", "name,value", "creation", *names])
    found: dict[str, datetime.datetime] = {}
    for line in result.stdout.splitlines():
        name, _tab, value = line.partition("\t")
        if value.strip().isdigit():
            found[name] = datetime.datetime.fromtimestamp(int(value), tz=datetime.UTC)
    return found


def empty_folders(conn: Connector, root: str) -> list[Folder]:
    """The empty folders right under ``root`` with their modification times (none when
    ``root`` does not exist)."""
    argv = ["find", root, "-mindepth", "1", "-maxdepth", "1", "-type", "d", "-empty"]
    result = conn.run([*argv, "-printf", "%T@ %f\\0"])
    found = []
    for entry in result.stdout.split("\0"):
        stamp, _sp, name = entry.partition(" ")
        try:
            modified = datetime.datetime.fromtimestamp(float(stamp), tz=datetime.UTC)
        except ValueError:
            continue
        if name and "/" not in name:
            found.append(Folder(root, name, modified))
    return found


def destroy(conn: Connector, clone: Clone) -> bool:
    """Unmount (stopping what holds it), destroy and remove the mountpoint folder of one
    of our clones; False when it was gone already."""
    if owners.clone_owner(clone.name) is None:
        raise SweepError(f"refusing to destroy {clone.name}")
    inside = any(clone.mountpoint.startswith(f"{root}/") for root in ROOTS)
    if clone.mounted:
        if not inside:
            raise SweepError(f"{clone.name} is mounted outside {' and '.join(ROOTS)}")
        try:
            unmount_releasing(conn, clone.name, clone.mountpoint)
        except UnmountFailed as exc:
            raise SweepError(str(exc)) from exc
    text = ""
    for attempt in range(10):
        result = conn.run(["zfs", "destroy", clone.name])
        text = (result.stderr or result.stdout).strip()
        gone = "does not exist" in text or "could not find" in text
        if result.ok or gone:
            if inside:
                conn.run(["rmdir", "--", clone.mountpoint])
            return result.ok
        if "busy" not in text:
            break
        # FUSE closes files asynchronously: zfs-fuse may hold the last ones a moment longer.
        time.sleep(0.25 * (attempt + 1))
    raise SweepError(f"zfs destroy {clone.name}: {text[:300]}")


def _audit(node: Node, clone: Clone, owner: owners.Owner, job: owners.JobFacts | None) -> None:
    with transaction.atomic():
        auditing.record(
            AUDIT_ACTION,
            obj=node,
            object_repr=f"{node.hostname}: {clone.name}",
            customer_path=node.customer_path,
            extra={
                "clone": clone.name,
                "origin": clone.origin,
                "job": owner.job_id,
                "job_status": job.status if job is not None else None,
            },
        )
