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
from django.utils.translation import gettext_noop

from deploy.connector.base import Connector
from mail.models import Mailbox

from . import restore
from .models import Snapshot
from .restore_node import PROGRAM

#: Where restore clones are mounted on the node (never inside the mail root).
CLONE_ROOT = "/var/lib/ums-restore"
#: Seconds each call of the node program works before reporting progress.
SLICE_SECONDS = 3.0
CLONE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]*/ums-restore-[0-9]+$")


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
    """Destroy the job's clone; gone is fine."""
    destroy_clone_named(conn, clone_name(snapshot, job_id))


def destroy_clone_named(conn: Connector, clone: str) -> None:
    """``zfs destroy`` of a restore clone (only a name of our pattern); gone is fine."""
    if not CLONE_RE.match(clone):
        raise RestoreError(f"refusing to destroy {clone}")
    for attempt in range(20):
        result = conn.run(["zfs", "destroy", clone])
        text = (result.stderr or result.stdout).strip()
        if result.ok or "does not exist" in text or "could not find" in text:
            # Its empty mountpoint folder too (ZFS leaves it): one per restore piled up
            # under CLONE_ROOT. rmdir removes nothing but an empty folder.
            conn.run(["rmdir", f"{CLONE_ROOT}/{clone.replace('/', '-')}"])
            return
        if "busy" not in text:
            break
        # FUSE closes files asynchronously: zfs-fuse may hold the last ones a moment longer.
        time.sleep(0.25 * (attempt + 1))
    raise RestoreError(f"zfs destroy {clone} failed: {text}")


def node_program(conn: Connector, python: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Run the constant node program with ``args`` (JSON on its standard input: a domain's
    list of mailboxes can exceed the 128 KB limit of one argument); its JSON answer."""
    result = conn.run([python, "-c", PROGRAM], input=json.dumps(args).encode())
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = {}
    if not result.ok or "error" in answer:
        detail = answer.get("error") or (result.stderr or result.stdout).strip()[-2000:]
        raise RestoreError(f"The restore failed on the node: {detail}")
    return answer


@dataclass
class Hooks:
    """How a run reports: the job's parameters, progress and log (no-ops in tests)."""

    save_params: Callable[[dict[str, Any]], None] = lambda params: None
    progress: Callable[[int, int], None] = lambda done, total: None
    say: Callable[..., None] = lambda msgid, **values: None


@dataclass
class Work:
    """One mailbox's part of the restore: its folder plan and the messages in it."""

    box: Box
    steps: list[list[Any]]
    count: int


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
    mailboxes = Mailbox.objects.filter(domain=snapshot.domain).order_by("local_part")
    if params.get("mailbox_id"):
        mailboxes = mailboxes.filter(pk=params["mailbox_id"])
    boxes = [Box(m.local_part, max(int(m.quota_mb or 0), 0) * 1024 * 1024) for m in mailboxes]
    if not boxes:
        raise RestoreError("The mailbox was deleted.")
    mount = ensure_clone(conn, snapshot, job_id)
    restorer = _Restorer(
        conn, job_id, params, python, snapshot, mount, Hooks(save_params, progress, say)
    )
    restorer.tier_roots = tier_roots(conn, snapshot, python)
    try:
        result = restorer.copy(restorer.plan(boxes))
    except RestoreError:
        # This job will not run again: its clone and staging folders are of no use.
        restorer.abort(boxes)
        destroy_clone(conn, snapshot, job_id)
        raise
    destroy_clone(conn, snapshot, job_id)
    return result


def tier_roots(conn: Connector, snapshot: Snapshot, python: str) -> list[str]:
    """The node's tier folder (mounted now if it is an S3 tier), whose links a restore
    follows; none without a tiering policy."""
    from .tiering import TierError, ensure_mounted

    try:
        root = ensure_mounted(conn, snapshot.node, python=python)
    except TierError as exc:
        raise RestoreError(str(exc)) from exc
    return [root] if root else []


class _Restorer:
    tier_roots: list[str] = []

    def __init__(
        self,
        conn: Connector,
        job_id: int,
        params: dict[str, Any],
        python: str,
        snapshot: Snapshot,
        mount: str,
        hooks: Hooks,
    ) -> None:
        assert snapshot.domain is not None
        self.conn, self.job_id, self.params, self.python = conn, int(job_id), params, python
        self.snapshot, self.domain, self.mount, self.hooks = snapshot, snapshot.domain, mount, hooks
        self.root = str(conf()["mail_root"]).rstrip("/")
        self.mode, self.folder = params["mode"], params["folder"]
        self.targets: dict[str, str] = dict(params.get("targets") or {})

    def stage(self, box: Box) -> str:
        # Beside the Maildir: the same file system (renames), unseen by Courier.
        return f"{self.root}/{self.domain.name}/{box.key}/.ums-restore-{self.job_id}"

    def abort(self, boxes: list[Box]) -> None:
        stages = [self.stage(b) for b in boxes]
        node_program(self.conn, self.python, {"op": "abort", "root": self.root, "stages": stages})

    def source(self, box: Box) -> str:
        return f"{self.mount}/{box.key}/Maildir"

    def maildir(self, box: Box) -> str:
        return f"{self.root}/{self.domain.name}/{box.key}/Maildir"

    def plan(self, boxes: list[Box]) -> list[Work]:
        """What the snapshot and the live Maildirs hold (one command) and, per mailbox,
        the folder plan; the target names are saved before anything is copied."""
        say = self.hooks.say
        say(gettext_noop("snapshot %(snapshot)s mounted read-only"), snapshot=self.snapshot.name)
        listing = node_program(
            self.conn,
            self.python,
            {
                "op": "list",
                "tier_roots": self.tier_roots,
                "mailboxes": [
                    {"key": b.key, "source": self.source(b), "maildir": self.maildir(b)}
                    for b in boxes
                ],
            },
        )
        one = bool(self.params.get("mailbox_id"))
        date = restore.restored_date(self.snapshot)
        work: list[Work] = []
        for box in boxes:
            seen = listing.get(box.key) or {"source": {}, "live": []}
            source, live = seen["source"], seen["live"]
            address = f"{box.key}@{self.domain.name}"
            if not source:
                if one:
                    raise RestoreError(f"{address} is not in this snapshot.")
                say(gettext_noop("%(mailbox)s: not in the snapshot, skipped"), mailbox=box.key)
                continue
            if "" not in live:
                if one:
                    raise RestoreError(f"{address} has no Maildir on the node yet.")
                say(gettext_noop("%(mailbox)s: no Maildir on the node, skipped"), mailbox=box.key)
                continue
            folder = self.folder
            if folder is not None and not any(restore.selects(folder, d) for d in source):
                raise RestoreError(f"The folder {folder or 'INBOX'} is not in this snapshot.")
            if self.mode == restore.NEW_FOLDER and box.key not in self.targets:
                self.targets[box.key] = restore.target_folder(date, live)
            steps = restore.plan(self.mode, folder, sorted(source), self.targets.get(box.key, ""))
            count = sum(source.get(s, 0) for s, _d in steps if s is not None)
            work.append(Work(box, steps, count))
        if self.targets != (self.params.get("targets") or {}):
            self.hooks.save_params({**self.params, "targets": self.targets})
        return work

    def copy(self, work: list[Work]) -> dict[str, Any]:
        """Each mailbox in time slices of the node program, reporting progress."""
        total = sum(w.count for w in work)
        self.hooks.progress(0, total)
        done_before = copied = flags = 0
        for item in work:
            args = {
                "op": "restore",
                "tier_roots": self.tier_roots,
                "mode": self.mode,
                "root": self.root,
                "source_root": self.mount,
                "source": self.source(item.box),
                "maildir": self.maildir(item.box),
                "stage": self.stage(item.box),
                "folders": item.steps,
                "quota": item.box.quota,
                "budget": SLICE_SECONDS,
            }
            while True:
                answer = node_program(self.conn, self.python, args)
                copied += int(answer.get("copied", 0))
                flags += int(answer.get("flags", 0))
                self.hooks.progress(done_before + int(answer.get("done", 0)), total)
                if answer.get("finished"):
                    break
            done_before += item.count
            self.hooks.say(
                gettext_noop("%(mailbox)s: %(count)d message(s) restored"),
                mailbox=item.box.key,
                count=item.count,
            )
        return {
            "mailboxes": [w.box.key for w in work],
            "messages": total,
            "copied": copied,
            "flags_restored": flags,
            "folders": {k: v[1:] for k, v in self.targets.items()},
            "mode": self.mode,
        }


def list_folders(
    conn: Connector, job_id: int, snapshot: Snapshot, mailbox: Mailbox, *, python: str
) -> list[list[Any]]:
    """``[[folder name, messages], ...]`` of ``mailbox`` in ``snapshot`` (``INBOX`` first,
    then Maildir++ names such as ``Sent`` or ``Archive.2025``), read through a clone."""
    mount = ensure_clone(conn, snapshot, job_id)
    try:
        box = Box(mailbox.local_part, 0)
        root = str(conf()["mail_root"]).rstrip("/")
        listing = node_program(
            conn,
            python,
            {
                "op": "list",
                "tier_roots": tier_roots(conn, snapshot, python),
                "mailboxes": [
                    {
                        "key": box.key,
                        "source": f"{mount}/{box.key}/Maildir",
                        "maildir": f"{root}/{mailbox.domain.name}/{box.key}/Maildir",
                    }
                ],
            },
        )
    finally:
        destroy_clone(conn, snapshot, job_id)
    source = (listing.get(box.key) or {}).get("source") or {}
    return [[d[1:] if d else "INBOX", source[d]] for d in sorted(source)]
