"""One restore on an IMAP node: clone the snapshot, read what it and the live Maildirs
hold, then bring the chosen folders back mailbox by mailbox, in time slices that report
progress. Used by the ``backup.restore`` job over SSH and by tests with a local connector.

Why a clone: OpenZFS shows a snapshot's files under ``.zfs/snapshot/``, zfs-fuse (the test
machines) does not; ``zfs clone`` (read-only, mounted outside the mail root, outside the
mail store's parent dataset so the snapshot scheduler never sees it) works on both and
costs nothing until written. It is named after the job, so a resumed job finds it and a
finished one destroys it.

Every step can run again: the target folder names are chosen once and kept in the job's
parameters (a re-run never picks "(2)" because of its own earlier folder), and the node
program (:mod:`.restore_node`) skips what is already there.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from deploy.connector.base import Connector
from mail.models import Mailbox

from . import restore
from .models import Snapshot
from .restore_node import PROGRAM

#: Where restore clones are mounted on the node (never inside the mail root).
CLONE_ROOT = "/var/lib/ums-restore"
#: Seconds each call of the node program works before reporting progress.
SLICE_SECONDS = 3.0
_CLONE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]*/ums-restore-[0-9]+$")


class RestoreError(Exception):
    """The restore cannot go on; the message says why in a sentence."""


@dataclass(frozen=True)
class Box:
    """A mailbox as the node program sees it."""

    key: str  # local part
    quota: int  # bytes, 0: none


def conf() -> dict[str, Any]:
    from deploy.desired import DEFAULT_SETTINGS

    return {**DEFAULT_SETTINGS, **getattr(settings, "UMS_CONVERGE", {})}


def clone_name(snapshot: Snapshot, job_id: int) -> str:
    pool = snapshot.dataset.split("/", 1)[0]
    return f"{pool}/ums-restore-{int(job_id)}"


def _run(conn: Connector, argv: list[str], what: str) -> str:
    result = conn.run(argv)
    if not result.ok:
        raise RestoreError(f"{what} failed: {(result.stderr or result.stdout).strip()[:2000]}")
    return result.stdout


def ensure_clone(conn: Connector, snapshot: Snapshot, job_id: int) -> str:
    """Mount the snapshot read-only as the job's clone; its mountpoint. Idempotent."""
    clone = clone_name(snapshot, job_id)
    origin = f"{snapshot.dataset}@{snapshot.name}"
    mountpoint = f"{CLONE_ROOT}/{clone.replace('/', '-')}"
    found = conn.run(["zfs", "get", "-H", "-o", "value", "origin,mounted,mountpoint", clone])
    if found.ok:
        values = found.stdout.split("\n")
        if values[0].strip() != origin:
            raise RestoreError(f"{clone} exists and is not a clone of {origin}")
        if values[1].strip() != "yes":
            _run(conn, ["zfs", "mount", clone], "zfs mount")
        return values[2].strip()
    error = (found.stderr or found.stdout).strip()
    if "does not exist" not in error and "dataset does not exist" not in error:
        raise RestoreError(f"zfs get failed: {error}")
    _run(
        conn,
        ["zfs", "clone", "-o", "readonly=on", "-o", f"mountpoint={mountpoint}", origin, clone],
        "zfs clone",
    )
    return mountpoint


def destroy_clone(conn: Connector, snapshot: Snapshot, job_id: int) -> None:
    """Destroy the job's clone (only a name of our pattern); gone is fine."""
    clone = clone_name(snapshot, job_id)
    if not _CLONE_RE.match(clone):
        raise RestoreError(f"refusing to destroy {clone}")
    for attempt in range(20):
        result = conn.run(["zfs", "destroy", clone])
        text = (result.stderr or result.stdout).strip()
        if result.ok or "does not exist" in text or "could not find" in text:
            return
        if "busy" not in text:
            break
        # FUSE closes files asynchronously: zfs-fuse may hold the last ones a moment longer.
        time.sleep(0.25 * (attempt + 1))
    raise RestoreError(f"zfs destroy {clone} failed: {text}")


def node_program(conn: Connector, python: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Run the constant node program with ``args`` (one JSON argument); its JSON answer."""
    result = conn.run([python, "-c", PROGRAM, json.dumps(args)])
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = {}
    if not result.ok or "error" in answer:
        detail = answer.get("error") or (result.stderr or result.stdout).strip()[-2000:]
        raise RestoreError(f"the restore program on the node failed: {detail}")
    return answer


def run(
    conn: Connector,
    job_id: int,
    params: dict[str, Any],
    *,
    python: str,
    save_params: Callable[[dict[str, Any]], None] = lambda params: None,
    progress: Callable[[int, int], None] = lambda done, total: None,
    say: Callable[..., None] = lambda msgid, **values: None,
) -> dict[str, Any]:
    """Restore what ``params`` asks (see :func:`restore.start_restore`); a summary."""
    snapshot = Snapshot.objects.select_related("domain").filter(pk=params["snapshot_id"]).first()
    if snapshot is None or snapshot.domain is None:
        raise RestoreError("The snapshot (or its domain) is no longer listed by the node.")
    domain = snapshot.domain
    mailboxes = Mailbox.objects.filter(domain=domain).order_by("local_part")
    if params.get("mailbox_id"):
        mailboxes = mailboxes.filter(pk=params["mailbox_id"])
    boxes = [Box(m.local_part, max(int(m.quota_mb or 0), 0) * 1024 * 1024) for m in mailboxes]
    if not boxes:
        raise RestoreError("The mailbox was deleted.")
    root = str(conf()["mail_root"]).rstrip("/")
    mount = ensure_clone(conn, snapshot, job_id)
    try:
        result = _restore(
            conn, job_id, params, snapshot, boxes, mount, root, python, save_params, progress, say
        )
    except RestoreError:
        destroy_clone(conn, snapshot, job_id)  # this job will not run again: nothing to keep
        raise
    destroy_clone(conn, snapshot, job_id)
    return result


def _restore(
    conn: Connector,
    job_id: int,
    params: dict[str, Any],
    snapshot: Snapshot,
    boxes: list[Box],
    mount: str,
    root: str,
    python: str,
    save_params: Callable[[dict[str, Any]], None],
    progress: Callable[[int, int], None],
    say: Callable[..., None],
) -> dict[str, Any]:
    from django.utils.translation import gettext_noop

    domain = snapshot.domain
    assert domain is not None
    mode, folder = params["mode"], params["folder"]
    domain_root = f"{root}/{domain.name}"
    say(gettext_noop("snapshot %(snapshot)s mounted read-only"), snapshot=snapshot.name)
    listing = node_program(
        conn,
        python,
        {
            "op": "list",
            "mailboxes": [
                {
                    "key": b.key,
                    "source": f"{mount}/{b.key}/Maildir",
                    "maildir": f"{domain_root}/{b.key}/Maildir",
                }
                for b in boxes
            ],
        },
    )
    targets: dict[str, str] = dict(params.get("targets") or {})
    work: list[tuple[Box, list[list[Any]], int]] = []
    date = restore.restored_date(snapshot)
    for box in boxes:
        seen = listing.get(box.key) or {"source": {}, "live": []}
        source, live = seen["source"], seen["live"]
        if not source:
            if params.get("mailbox_id"):
                raise RestoreError(f"{box.key}@{domain.name} is not in this snapshot.")
            say(gettext_noop("%(mailbox)s: not in the snapshot, skipped"), mailbox=box.key)
            continue
        if "" not in live:
            if params.get("mailbox_id"):
                raise RestoreError(f"{box.key}@{domain.name} has no Maildir on the node yet.")
            say(gettext_noop("%(mailbox)s: no Maildir on the node, skipped"), mailbox=box.key)
            continue
        if folder is not None and not any(restore.selects(folder, d) for d in source):
            raise RestoreError(f"The folder {folder or 'INBOX'} is not in this snapshot.")
        if mode == restore.NEW_FOLDER and box.key not in targets:
            targets[box.key] = restore.target_folder(date, live)
        steps = restore.plan(mode, folder, sorted(source), targets.get(box.key, ""))
        count = sum(source.get(s, 0) for s, _d in steps if s is not None)
        work.append((box, steps, count))
    if targets != (params.get("targets") or {}):
        save_params({**params, "targets": targets})  # before any copy: a re-run keeps them
    total = sum(count for _b, _s, count in work)
    progress(0, total)
    done_before = copied = flags = 0
    for box, steps, count in work:
        args = {
            "op": "restore",
            "mode": mode,
            "root": root,
            "source_root": mount,
            "source": f"{mount}/{box.key}/Maildir",
            "maildir": f"{domain_root}/{box.key}/Maildir",
            "stage": f"{domain_root}/{box.key}/.ums-restore-{int(job_id)}",
            "folders": steps,
            "quota": box.quota,
            "budget": SLICE_SECONDS,
        }
        while True:
            answer = node_program(conn, python, args)
            copied += int(answer.get("copied", 0))
            flags += int(answer.get("flags", 0))
            progress(done_before + int(answer.get("done", 0)), total)
            if answer.get("finished"):
                break
        done_before += count
        say(
            gettext_noop("%(mailbox)s: %(count)d message(s) restored"),
            mailbox=box.key,
            count=count,
        )
    return {
        "mailboxes": [b.key for b, _s, _c in work],
        "messages": total,
        "copied": copied,
        "flags_restored": flags,
        "folders": {k: v[1:] for k, v in targets.items()},
        "mode": mode,
    }
