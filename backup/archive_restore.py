"""Restore a mailbox from a Maildir archive copy onto the live IMAP node, into a new
folder ``Restored YYYY-MM-DD`` (the archived snapshot's date), as a job with progress.

The archive is read from the target, decrypted on the controller and fed over SSH into
GNU ``tar -x`` on the node, which extracts only ``<local part>/Maildir`` into a staging
folder ``/var/lib/ums-archive/restore-<job id>`` (outside the mail root, unseen by
Courier). From there the restore's own node program (:mod:`backup.restore_node`, the same
one a snapshot restore runs) builds the new folder beside the Maildir and renames it in,
so Courier sees it whole, subscribed, with the quota recounted.

Safe to run again: the extraction is redone unless its completion marker exists, the
target folder name is chosen once and kept in the job's parameters, and the node program
skips what is already there. The staging folder is removed at the end (and by a failing
run).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from mail.models import Domain, Mailbox
from tenants import permissions as perms
from ums import auditing, jobs
from ums.actions import action, require_in_scope, require_permission
from ums.models import Job

from . import drivers, offnode_archive, restore, restore_run, snapshots
from .models_offnode import OffnodeCopy
from .offnode_stream import feed_command

ARCHIVE_RESTORE_JOB = "backup.archive_restore"
MARKER = ".ums-extracted"


@action
def start_archive_restore(
    *, actor: Any, copy: OffnodeCopy, mailbox: Mailbox, snapshot: str = ""
) -> Job:
    """Restore ``mailbox`` from the domain's archive of ``snapshot`` (default: newest)."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(copy, actor)
    require_in_scope(mailbox, actor)
    errors: dict[str, list[str]] = {}
    if copy.kind != OffnodeCopy.ARCHIVE or copy.target_id is None:
        errors["copy"] = [_("Only Maildir archive copies can be restored this way.")]
    if mailbox.domain.name != copy.domain_name:
        errors["mailbox"] = [_("This mailbox is not in the archive's domain.")]
    if snapshot and snapshot not in copy.snapshots:
        errors["snapshot"] = [_("No archive of this snapshot is kept.")]
    if errors:
        raise ValidationError(errors)
    name = snapshot or copy.last_snapshot
    job = jobs.enqueue(
        ARCHIVE_RESTORE_JOB,
        actor=actor,
        title=_("Restore %(mailbox)s from the archive of %(snapshot)s")
        % {"mailbox": f"{mailbox.local_part}@{mailbox.domain.name}", "snapshot": name},
        customer=mailbox.domain.customer,
        target=mailbox,
        params={"copy_id": copy.pk, "mailbox_id": mailbox.pk, "snapshot": name},
    )
    auditing.record(
        "offnode_archive.restore",
        obj=mailbox,
        extra={"job": job.pk, "archive": f"{copy.domain_name}@{name}", "target": copy.target_id},
    )
    return job


@dataclass
class _Archived:
    """What :class:`restore_run._Restorer` needs of a snapshot."""

    name: str
    domain: Domain
    taken_at: datetime.datetime


def staging(job_id: int) -> str:
    return f"{offnode_archive.CLONE_ROOT}/restore-{int(job_id)}"


def _taken_at(name: str, fallback: str) -> datetime.datetime:
    """The snapshot's time from its name (``ums-daily-20261207T0000Z``), else the
    archive's."""
    match = snapshots.NAME_RE.match(name)
    if match:
        stamp = match.group(2)
        layout = "%Y%m%dT%H%M%SZ" if len(stamp) == 16 else "%Y%m%dT%H%MZ"
        return datetime.datetime.strptime(stamp, layout).replace(tzinfo=datetime.UTC)
    return datetime.datetime.fromisoformat(fallback)


def extract(conn: Any, driver: Any, entry: dict[str, Any], local_part: str, job_id: int) -> str:
    """The archive's ``<local part>/Maildir`` on the node under the staging folder."""
    folder = staging(job_id)
    if conn.run(["test", "-e", f"{folder}/{MARKER}"]).ok:
        return folder
    conn.run(["rm", "-rf", "--", folder])
    result = conn.run(["mkdir", "-p", "-m", "0700", "--", folder])
    if not result.ok:
        raise restore_run.RestoreError(f"mkdir {folder} failed: {result.stderr.strip()}")
    member = f"{local_part}/Maildir"
    argv = ["tar", "-x", "-C", folder, "--numeric-owner", "-f", "-", "--", member]
    feed_command(conn, argv, drivers.get_decrypted(driver, entry["name"]))
    conn.run(["touch", "--", f"{folder}/{MARKER}"])
    return folder


@jobs.handler(ARCHIVE_RESTORE_JOB)
def run_archive_restore(job: Job, reporter: jobs.Reporter) -> dict:
    from deploy.desired import os_family
    from deploy.models import DomainPlacement
    from deploy.nodes import session
    from deploy.services.probes import PYTHON

    copy = OffnodeCopy.objects.filter(pk=job.params["copy_id"]).select_related("target").first()
    mailbox = Mailbox.objects.select_related("domain").filter(pk=job.params["mailbox_id"]).first()
    if copy is None or copy.target is None or mailbox is None:
        raise jobs.PermanentJobError("The archive copy or the mailbox is gone.")
    placement = DomainPlacement.objects.filter(domain=mailbox.domain).select_related("node")
    node = placement.first().node if placement.exists() else None
    if node is None:
        raise jobs.PermanentJobError("The domain is not placed on an IMAP node.")
    driver = drivers.driver_for(copy.target)
    try:
        manifest = offnode_archive.read_manifest(driver, copy.domain_name)
        found = [a for a in manifest["archives"] if a["snapshot"] == job.params["snapshot"]]
        if not found:
            raise jobs.PermanentJobError("The target no longer keeps this archive.")
        entry = found[-1]
        key = mailbox.local_part.lower()
        if key not in {m.lower() for m in entry.get("mailboxes", [])}:
            raise jobs.PermanentJobError(
                f"{mailbox.local_part}@{mailbox.domain.name} is not in this archive "
                "(excluded or purged)."
            )
        params = {
            **job.params,
            "mode": restore.NEW_FOLDER,
            "folder": None,
            "mailbox_id": mailbox.pk,
        }

        def save_params(new: dict) -> None:
            Job.objects.filter(pk=job.pk).update(params=new)

        with session(node) as conn:
            folder = extract(conn, driver, entry, key, job.pk)
            reporter.say(
                gettext_noop("archive of %(snapshot)s read from %(target)s"),
                snapshot=entry["snapshot"],
                target=copy.target.name,
            )
            archived = _Archived(
                entry["snapshot"], mailbox.domain, _taken_at(entry["snapshot"], entry["at"])
            )
            restorer = restore_run._Restorer(
                conn,
                job.pk,
                params,
                PYTHON.get(os_family(node.os_id), PYTHON["debian"]),
                archived,  # type: ignore[arg-type]
                folder,
                restore_run.Hooks(save_params, reporter.progress, reporter.say),
            )
            box = restore_run.Box(key, max(int(mailbox.quota_mb or 0), 0) * 1024 * 1024)
            try:
                result = restorer.copy(restorer.plan([box]))
            except restore_run.RestoreError:
                restorer.abort([box])
                conn.run(["rm", "-rf", "--", folder])
                raise
            conn.run(["rm", "-rf", "--", folder])
    except (restore_run.RestoreError, drivers.TargetError) as exc:
        raise jobs.PermanentJobError(str(exc)) from exc
    finally:
        driver.close()
    return {**result, "snapshot": entry["snapshot"]}
