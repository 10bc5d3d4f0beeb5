"""Storage tiering: a per mail store policy moves messages nobody touched for N days to a
secondary tier, where IMAP and POP3 still read them.

The tier is either a *folder* (a mounted NFS export, CIFS share or any FUSE file system
the operator mounted on the node; the kernel on the test machines has no NFS or CIFS, so
the tests use a plain folder for this case) or an *S3 bucket* of an existing S3 backup
target, mounted by the pass itself with ``s3fs`` under :data:`MOUNT_ROOT` (the keys are
sent on the program's standard input, written 0600 for s3fs's start and deleted).

**Move, then link.** The message file is copied to the tier, fsynced, read back and
compared, then replaced, in one ``rename``, by a symbolic link to the copy (see
:mod:`.tier_node`). Courier opens and stats messages through the path, so a link reads
exactly as the file did: same bytes, same size (``RFC822.SIZE``), same ``INTERNALDATE``
(the copy keeps the mtime), and a flag change renames the link. A hard link cannot cross
file systems and a FUSE overlay in front of every Maildir would put Courier's every read
through user space; a link costs nothing for messages that stay on the store.

**"Not read for N days"** is measured from what Courier leaves on the file: the delivery
time in the Maildir name, its mtime (delivery, or an APPEND's INTERNALDATE) and its ctime,
which every flag change moves (the first read sets ``\\Seen`` by renaming the file; a
POP3 RETR moves it from ``new/`` to ``cur/``). The newest of the three must be N days
old. atime is not used: ZFS (zfs-fuse here) and FUSE tiers keep it lazily or not at all,
and every backup or export that reads the files would reset it. So re-reading a message
that is already ``\\Seen`` leaves no trace and does not keep it on the store. The rule is
the same for every folder; Inbox messages younger than the policy are never tiered.

**Recall.** A read brings nothing back unless the store's ``tier_recall`` is set: then
the next pass copies a tiered message whose link Courier renamed since it was tiered (a
flag change, such as the first read) back onto the store and deletes the tier copy.

**Quota.** ``maildirsize`` is left alone: the message is still in the mailbox, and
Courier's recount follows the link (the node test recounts and compares). The usage
collection follows links too. The ZFS dataset's own space shrinks, which is the point.

**Backups.** Snapshots and off-node ``zfs send`` streams hold the link, not the bytes;
Maildir exports and off-node Maildir archives follow it (``tar --dereference``). The
tier copy is never deleted while a link could point to it (an expunge deletes only the
link; only a recall deletes a copy, after replacing the link, and a permanent purge
deletes the mailbox's copies: :mod:`.tier_holder`). A restore follows links that point
into the node's tier and copies the bytes back (restore_node's ``tier_roots``), so a
restore from a snapshot taken after tiering gives the message back, as a plain file on
the store. The tier itself must be backed up by its owner (an S3 bucket's versioning,
the NFS server's snapshots): an off-node ``zfs send`` copy of the node alone does not
carry tiered bytes.

Each pass is a job with progress; "Tier now" is an audited action; the scheduled pass
runs every ``UMS_TIER_INTERVAL`` seconds from Celery beat.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from servers.choices import REACHABLE_STATUSES
from servers.models import Node
from tenants import permissions as perms
from ums import auditing, jobs
from ums.actions import action, require_in_scope, require_permission
from ums.models import Job

from .choices import TierKind
from .models import MailStoreSettings, TierUsage
from .tier_node import PROGRAM

TIER_JOB = "backup.tier_node"
AUDIT_TIER_NOW = "mail_store.tier_now"
#: Where S3 tiers are mounted on the node and the pass keeps its lock.
MOUNT_ROOT = "/var/lib/ums-tier"
#: Seconds each call of the node program works before reporting progress.
SLICE_SECONDS = 5.0


class TierError(Exception):
    """The pass cannot go on; the message says why."""


def clock() -> float:
    """The controller's time the node measures idleness against (one place for tests)."""
    return time.time()


def mail_root() -> str:
    """The node's mail root as the converge renders it."""
    from deploy.desired import DEFAULT_SETTINGS

    conf = {**DEFAULT_SETTINGS, **getattr(settings, "UMS_CONVERGE", {})}
    return str(conf["mail_root"]).rstrip("/")


def mount_spec(row: MailStoreSettings, owner: tuple[int, int]) -> dict[str, Any]:
    """What the node program mounts or checks (the S3 secret only in here)."""
    if row.tier_kind == TierKind.FOLDER:
        return {"kind": "folder", "point": row.tier_path.rstrip("/")}
    target = row.tier_target
    if target is None:
        raise TierError("The S3 tier's backup target is gone.")
    return {
        "kind": "s3",
        "point": f"{MOUNT_ROOT}/s3-{target.pk}",
        "url": target.s3_endpoint.rstrip("/"),
        "bucket": target.s3_bucket,
        "prefix": "/".join(p for p in (target.s3_prefix.strip("/"), "ums-tier") if p),
        "access_key": target.s3_access_key,
        "secret_key": target.s3_secret_key,
        "uid": owner[0],
        "gid": owner[1],
    }


def tier_root(row: MailStoreSettings) -> str | None:
    """The folder on the node links may point into (restores follow only those)."""
    if not row.tier_kind:
        return None
    if row.tier_kind == TierKind.FOLDER:
        return row.tier_path.rstrip("/")
    return f"{MOUNT_ROOT}/s3-{row.tier_target_id}"


def node_program(conn: Any, python: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Run the constant node program with ``args`` on its standard input; its answer."""
    result = conn.run([python, "-c", PROGRAM], input=json.dumps(args).encode(), timeout=900)
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = {}
    if not result.ok or "error" in answer:
        detail = answer.get("error") or (result.stderr or result.stdout).strip()[-2000:]
        raise TierError(f"The tiering pass failed on the node: {detail}")
    return answer


def mail_owner(conn: Any, root: str) -> tuple[int, int]:
    """uid and gid of the node's mail root (the mail user: tier folders and s3fs files
    belong to it so Courier, running as that user, reads through the links)."""
    result = conn.run(["stat", "-c", "%u %g", root])
    if not result.ok:
        raise TierError(f"The mail root {root} is missing on the node.")
    uid, gid = result.stdout.split()
    return int(uid), int(gid)


def ensure_mounted(conn: Any, node: Node, *, python: str) -> str | None:
    """Mount (S3) or check (folder) the node's tier; its folder, or None without one."""
    row = MailStoreSettings.objects.select_related("tier_target").filter(node=node).first()
    if row is None or not row.tier_kind:
        return None
    root = mail_root()
    spec = mount_spec(row, mail_owner(conn, root))
    node_program(conn, python, {"op": "mount", "mount": spec})
    return spec["point"]


def run_pass(
    conn: Any,
    node: Node,
    *,
    python: str,
    progress: Callable[[int, int], None] = lambda done, total: None,
    say: Callable[..., None] = lambda msgid, **values: None,
) -> dict[str, Any]:
    """One tiering pass over the node's domains; a summary. Usage rows are recorded."""
    from deploy.models import DomainPlacement

    row = MailStoreSettings.objects.select_related("tier_target").filter(node=node).first()
    if row is None or not row.tier_days or not row.tier_kind:
        raise TierError("This mail store has no tiering policy.")
    placements = list(DomainPlacement.objects.filter(node=node).select_related("domain"))
    if not placements:
        return {"tiered": 0, "recalled": 0, "bytes": 0, "domains": 0}
    root = mail_root()
    spec = mount_spec(row, mail_owner(conn, root))
    args = {
        "op": "tier",
        "root": root,
        "mount": spec,
        "lock_dir": MOUNT_ROOT,
        "domains": sorted(p.domain.name for p in placements),
        "idle_days": int(row.tier_days),
        "now": clock(),
        "recall": bool(row.tier_recall),
        "budget": SLICE_SECONDS,
    }
    conn.run(["mkdir", "-p", MOUNT_ROOT])
    say(gettext_noop("tier %(tier)s ready"), tier=spec["point"])
    totals = {"tiered": 0, "recalled": 0, "bytes": 0}
    total = None
    while True:
        answer = node_program(conn, python, args)
        for key in totals:
            totals[key] += int(answer.get(key, 0))
        done = totals["tiered"] + totals["recalled"]
        if total is None:
            total = done + int(answer.get("remaining", 0))
        progress(min(done, total), total)
        if answer.get("finished"):
            break
    _record_usage(node, placements, row.tier_kind, answer.get("usage") or {})
    say(
        gettext_noop("%(tiered)d message(s) tiered, %(recalled)d recalled"),
        tiered=totals["tiered"],
        recalled=totals["recalled"],
    )
    return {**totals, "domains": len(placements)}


def _record_usage(node: Node, placements: list[Any], kind: str, usage: dict[str, Any]) -> None:
    now = timezone.now()
    for placement in placements:
        values = usage.get(placement.domain.name)
        if values is None:
            continue
        TierUsage.objects.update_or_create(
            domain=placement.domain,
            defaults={
                "node": node,
                "customer_path": placement.domain.customer_path,
                "tier_kind": kind,
                "measured_at": now,
                **{k: int(values.get(k, 0)) for k in USAGE_KEYS},
            },
        )


USAGE_KEYS = ("primary_bytes", "primary_messages", "tier_bytes", "tier_messages")


def usage_for_domain(domain: Any) -> dict[str, Any] | None:
    """Bytes and messages per tier of a domain as last measured (API and portal)."""
    row = TierUsage.objects.filter(domain=domain).first()
    if row is None:
        return None
    return {
        "tiers": [
            {"tier": "store", "bytes": row.primary_bytes, "messages": row.primary_messages},
            {
                "tier": row.tier_kind or "none",
                "bytes": row.tier_bytes,
                "messages": row.tier_messages,
            },
        ],
        "measuredAt": row.measured_at.isoformat(),
    }


# --------------------------------------------------------------------- job and action


def _busy(node: Node) -> bool:
    return Job.objects.filter(
        kind=TIER_JOB,
        object_type="servers.node",
        object_id=str(node.pk),
        status__in=(Job.PENDING, Job.RUNNING),
    ).exists()


@action
def tier_now(*, actor: Any, node: Node) -> Job:
    """ "Tier now": a job runs the store's tiering pass at once."""
    from django.core.exceptions import ValidationError

    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(node, actor)
    row = MailStoreSettings.objects.filter(node=node).first()
    if row is None or not row.tier_days or not row.tier_kind:
        raise ValidationError({"node": _("This mail store has no tiering policy.")})
    job = jobs.enqueue(
        TIER_JOB,
        actor=actor,
        title=_("Tiering on %(node)s") % {"node": node.hostname},
        customer_path=node.customer_path,
        target=node,
        params={"node_id": node.pk},
    )
    auditing.record(AUDIT_TIER_NOW, obj=node, object_repr=node.hostname, extra={"job": job.pk})
    return job


def schedule() -> dict[str, Any]:
    """Enqueue a pass for each reachable IMAP node with a policy and no pass pending."""
    started = []
    rows = MailStoreSettings.objects.filter(
        tier_days__isnull=False, node__status__in=REACHABLE_STATUSES
    ).exclude(tier_kind="")
    for row in rows.select_related("node"):
        node = row.node
        if "imap" not in (node.roles or ()) or _busy(node):
            continue
        jobs.enqueue(
            TIER_JOB,
            actor=None,
            title=f"Scheduled tiering on {node.hostname}",
            customer_path=node.customer_path,
            target=node,
            params={"node_id": node.pk},
        )
        started.append(node.hostname)
    return {"started": started}


@jobs.handler(TIER_JOB)
def tier_node(job: Job, reporter: jobs.Reporter) -> dict:
    """One tiering pass on an IMAP node (see :mod:`backup.tier_node`)."""
    from deploy.desired import os_family
    from deploy.nodes import session
    from deploy.services.probes import PYTHON

    node = Node.objects.filter(pk=job.params.get("node_id")).first()
    if node is None:
        raise jobs.PermanentJobError("The node was deleted.")
    try:
        with session(node) as conn:
            return run_pass(
                conn,
                node,
                python=PYTHON.get(os_family(node.os_id), PYTHON["debian"]),
                progress=reporter.progress,
                say=reporter.say,
            )
    except TierError as exc:
        raise jobs.PermanentJobError(str(exc)) from exc
