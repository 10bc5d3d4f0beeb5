"""Rebuild a domain's dataset on a new IMAP node from its newest Maildir archive copy
(part of "Restore onto a new node", :mod:`backup.rebuild`), for domains whose only
off-node copy is an archive, or when the administrator chooses the archive.

An archive holds Maildirs, not a dataset, so the dataset is made anew: a staging dataset
``<pool>/ums-rebuild-<domain>`` mounted under ``/var/lib/ums-archive/`` (outside the mail
root: Courier and Postfix never see it half-filled), the archive decrypted on the
controller and unpacked into it by GNU ``tar -x`` on the node (owners kept by number), the
plain tar's SHA-256 checked against the manifest (an increment: its point assembled from
the chain, each tar checked, :mod:`backup.archive_chain`), then a snapshot named after the
archived one and **one** ``zfs rename`` to the domain's dataset. That rename is the
commit point: a dataset with the archived snapshot is a finished rebuild (a repeat skips
it); anything before it is a staging dataset the next run destroys and starts again.

What is not in the archive does not come back: mailboxes and folders the exclusion
policies left out, and the older snapshots (the new dataset starts with one).
"""

from __future__ import annotations

import re
import time

from deploy.connector.base import Connector

from . import archive_chain, offnode_archive
from . import offnode_zfs as oz
from .drivers import Target
from .offnode_stream import feed_command

STAGE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]*/ums-rebuild-[A-Za-z0-9_.:-]+$")


def staging(pool: str, domain_name: str) -> tuple[str, str]:
    """The staging dataset of ``domain_name`` and where it is mounted."""
    name = f"{pool}/ums-rebuild-{domain_name}"
    if not STAGE_RE.match(name):
        raise oz.OffnodeError(f"cannot stage {domain_name!r}: not a dataset name")
    return name, staging_mountpoint(name)


def staging_mountpoint(stage: str) -> str:
    domain_name = stage.rsplit("/ums-rebuild-", 1)[1]
    return f"{offnode_archive.CLONE_ROOT}/rebuild-{domain_name}"


def _exists(conn: Connector, name: str) -> bool:
    return conn.run(["zfs", "get", "-H", "-o", "value", "type", name]).ok


def _run(conn: Connector, argv: list[str], what: str) -> None:
    result = conn.run(argv)
    if not result.ok:
        detail = (result.stderr or result.stdout).strip()[:300]
        raise oz.OffnodeError(f"{what} failed on {conn.host}: {detail}")


def destroy_staging(conn: Connector, stage: str) -> None:
    """``zfs destroy -r`` of a staging dataset (only names of our pattern); gone is fine."""
    if not STAGE_RE.match(stage):
        raise oz.OffnodeError(f"refusing to destroy {stage}")
    for attempt in range(30):
        result = conn.run(["zfs", "destroy", "-r", stage])
        text = (result.stderr or result.stdout).strip()
        if result.ok or "does not exist" in text or "could not find" in text:
            return
        if "busy" not in text:
            break
        # The killed run's tar may still hold files until its SSH session is torn down,
        # and FUSE closes them asynchronously: unmount it and try again shortly.
        conn.run(["pkill", "-f", f"tar -x -C {staging_mountpoint(stage)}"])
        conn.run(["zfs", "unmount", "-f", stage])
        time.sleep(0.25 * (attempt + 1))
    raise oz.OffnodeError(f"cannot destroy {stage} on {conn.host}: {text[:300]}")


def receive_archive(conn: Connector, driver: Target, domain_name: str, dataset: str) -> str | None:
    """Make ``dataset`` from the newest archive of ``domain_name``; the archived snapshot,
    or ``None`` when an earlier run already did."""
    manifest = offnode_archive.read_manifest(driver, domain_name)
    if not manifest["archives"]:
        raise oz.OffnodeError(f"the target holds no archive of {domain_name}")
    entry = manifest["archives"][-1]
    name = entry["snapshot"]
    if _exists(conn, f"{dataset}@{name}"):
        return None
    if _exists(conn, dataset):
        raise oz.OffnodeError(
            f"{dataset} already exists on {conn.host} and is not this archive's rebuild: "
            "choose an empty node, or destroy that dataset first"
        )
    stage, mountpoint = staging(dataset.split("/", 1)[0], domain_name)
    destroy_staging(conn, stage)  # what a killed run left: start again
    _run(conn, ["zfs", "create", "-o", f"mountpoint={mountpoint}", stage], "zfs create")
    argv = ["tar", "-x", "-C", mountpoint, "--numeric-owner", "-f", "-"]
    chunks = archive_chain.plain_chunks(driver, manifest["archives"], entry)
    size, sha = feed_command(conn, argv, chunks)
    # An increment's point is assembled from the chain's tars, each checked on the way.
    if not archive_chain.needs_assembly(entry) and (
        sha != entry["sha256"] or size != entry["bytes"]
    ):
        raise oz.OffnodeError(
            f"the archive {entry['name']} does not match its manifest "
            f"(sha256 {sha}, manifest {entry['sha256']})"
        )
    _run(conn, ["zfs", "snapshot", f"{stage}@{name}"], "zfs snapshot")
    # Unmounted first: zfs-fuse refuses to rename a file system FUSE still holds files
    # of; the caller mounts the dataset where the mail lives.
    _retry_busy(conn, ["zfs", "unmount", stage], "zfs unmount")
    _retry_busy(conn, ["zfs", "rename", stage, oz.check_dataset(dataset)], "zfs rename")
    return name


def ensure_mounted(conn: Connector, dataset: str) -> None:
    """``zfs mount`` of the rebuilt dataset (already mounted is fine)."""
    result = conn.run(["zfs", "mount", dataset])
    text = (result.stderr or result.stdout).strip()
    if not result.ok and "already mounted" not in text:
        raise oz.OffnodeError(f"zfs mount {dataset} failed on {conn.host}: {text[:300]}")


def _retry_busy(conn: Connector, argv: list[str], what: str) -> None:
    """``argv``, again for a while as long as the dataset is busy (FUSE closes files
    asynchronously, a killed run's tar may still be exiting)."""
    for attempt in range(30):
        result = conn.run(argv)
        text = (result.stderr or result.stdout).strip()
        if result.ok or (argv[1] == "unmount" and "not currently mounted" in text):
            return
        if "busy" not in text:
            break
        time.sleep(0.25 * (attempt + 1))
    raise oz.OffnodeError(f"{what} failed on {conn.host}: {text[:300]}")
