"""Restore a whole domain, one mailbox or one folder from a Maildir archive copy onto
the live IMAP node, as a job with progress, with the snapshot restore's modes
(:mod:`backup.restore`): into a new folder ``Restored YYYY-MM-DD`` (the archived
snapshot's date; the default) or in place (copy back what is missing, reset the flags of
messages present in both; nothing is deleted).

The archive is read from the target, decrypted on the controller and fed over SSH into
GNU ``tar -x`` on the node, which extracts only the chosen ``<local part>/Maildir``
(a domain: the whole archive, which holds nothing but Maildirs) into a staging
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

from . import archive_chain, drivers, offnode_archive, restore, restore_run, snapshots
from .models_offnode import OffnodeCopy
from .offnode_stream import feed_command

ARCHIVE_RESTORE_JOB = "backup.archive_restore"
MARKER = ".ums-extracted"


@action
def start_archive_restore(
    *,
    actor: Any,
    copy: OffnodeCopy,
    mailbox: Mailbox | None = None,
    snapshot: str = "",
    folder: str | None = None,
    mode: str = restore.NEW_FOLDER,
) -> Job:
    """Restore the domain, ``mailbox`` or one ``folder`` of it from the domain's archive
    of ``snapshot`` (default: the newest), as the snapshot restore does (every error at
    once)."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(copy, actor)
    if mailbox is not None:
        require_in_scope(mailbox, actor)
    errors: dict[str, list[str]] = {}
    if copy.kind != OffnodeCopy.ARCHIVE or copy.target_id is None:
        errors["copy"] = [_("Only Maildir archive copies can be restored this way.")]
    if mailbox is not None and mailbox.domain.name != copy.domain_name:
        errors["mailbox"] = [_("This mailbox is not in the archive's domain.")]
    if snapshot and snapshot not in copy.snapshots:
        errors["snapshot"] = [_("No archive of this snapshot is kept.")]
    if mode not in restore.MODES:
        errors["mode"] = [_("Choose new_folder or in_place.")]
    try:
        folder = restore.clean_folder(folder)
    except ValidationError as exc:
        errors.setdefault("folder", []).extend(exc.messages)
    if folder is not None and mailbox is None:
        errors.setdefault("folder", []).append(_("A folder is restored from one mailbox."))
    if not errors:
        errors.update(check_members(copy, snapshot or copy.last_snapshot, mailbox, folder))
    domain = mailbox.domain if mailbox is not None else _live_domain(copy)
    if domain is None and "mailbox" not in errors:
        errors.setdefault("copy", []).append(_("The archive's domain no longer exists."))
    if errors:
        raise ValidationError(errors)
    assert domain is not None
    name = snapshot or copy.last_snapshot
    job = jobs.enqueue(
        ARCHIVE_RESTORE_JOB,
        actor=actor,
        title=_("Restore %(what)s from the archive of %(snapshot)s")
        % {"what": restore.describe(mailbox, folder, domain), "snapshot": name},
        customer=domain.customer,
        target=mailbox or domain,
        params={
            "copy_id": copy.pk,
            "domain_id": domain.pk,
            "mailbox_id": mailbox.pk if mailbox else None,
            "snapshot": name,
            "folder": folder,
            "mode": mode,
        },
    )
    auditing.record(
        "offnode_archive.restore",
        obj=mailbox or domain,
        extra={
            "job": job.pk,
            "archive": f"{copy.domain_name}@{name}",
            "target": copy.target_id,
            "folder": folder,
            "mode": mode,
        },
    )
    return job


def folders_held(copy: OffnodeCopy, snapshot: str) -> dict[str, list[str]] | None:
    """``{mailbox (lower case): [folder, ...]}`` of the archive of ``snapshot``, or
    ``None`` when its manifest entry predates the record of folders."""
    held = (copy.members or {}).get(snapshot)
    if not isinstance(held, dict):
        return None
    return {box.lower(): list(folders) for box, folders in held.items()}


def check_members(
    copy: OffnodeCopy, snapshot: str, mailbox: Mailbox | None, folder: str | None
) -> dict[str, list[str]]:
    """Field errors when the mailbox or folder asked for is not in the archive (a
    Maildir++ folder also selects its subfolders, so ``Archive`` matches when only
    ``Archive.2025`` is there)."""
    held = folders_held(copy, snapshot)
    if held is None or mailbox is None:
        return {}
    values = {"mailbox": mailbox.local_part, "snapshot": snapshot}
    folders = held.get(mailbox.local_part.lower())
    if folders is None:
        return {
            "mailbox": [
                _("%(mailbox)s is not in the archive of %(snapshot)s (excluded or purged).")
                % values
            ]
        }
    if folder and not any(f == folder or f.startswith(f"{folder}.") for f in folders):
        return {
            "folder": [
                _("The archive of %(snapshot)s has no folder %(folder)s in %(mailbox)s.")
                % {**values, "folder": folder}
            ]
        }
    return {}


def _live_domain(copy: OffnodeCopy) -> Domain | None:
    if copy.domain_id is not None:
        return Domain.objects.select_related("customer").filter(pk=copy.domain_id).first()
    return Domain.objects.select_related("customer").filter(name=copy.domain_name).first()


@dataclass
class _Archived:
    """What :class:`restore_run._Restorer` needs of a snapshot."""

    name: str
    domain: Domain
    taken_at: datetime.datetime


def stamp(name: str) -> str:
    """The UTC time stamp of an archived snapshot's name, for ordering by time (the tier
    before it would sort daily before manual)."""
    return name.rsplit("-", 1)[-1]


def staging(job_id: int) -> str:
    return f"{offnode_archive.CLONE_ROOT}/restore-{int(job_id)}"


def _taken_at(name: str, fallback: str) -> datetime.datetime:
    """The snapshot's time from its name (``ums-daily-20261207T0000Z``), else the
    archive's."""
    return snapshots.taken_at(name) or datetime.datetime.fromisoformat(fallback)


def extract(
    conn: Any,
    driver: Any,
    archives: list[dict[str, Any]],
    entry: dict[str, Any],
    local_part: str | None,
    job_id: int,
) -> str:
    """The archive's ``<local part>/Maildir`` (``None``: every mailbox in it) on the node
    under the staging folder (an increment: its point, assembled from its chain)."""
    folder = staging(job_id)
    if conn.run(["test", "-e", f"{folder}/{MARKER}"]).ok:
        return folder
    conn.run(["rm", "-rf", "--", folder])
    result = conn.run(["mkdir", "-p", "-m", "0700", "--", folder])
    if not result.ok:
        raise restore_run.RestoreError(f"mkdir {folder} failed: {result.stderr.strip()}")
    argv = ["tar", "-x", "-C", folder, "--numeric-owner", "-f", "-"]
    if local_part is not None:
        argv += ["--", f"{local_part}/Maildir"]
    only = f"{local_part}/Maildir" if local_part is not None else None
    feed_command(conn, argv, archive_chain.plain_chunks(driver, archives, entry, only))
    conn.run(["touch", "--", f"{folder}/{MARKER}"])
    return folder


def _boxes(job: Job, entry: dict[str, Any]) -> tuple[Domain, list[restore_run.Box]]:
    """The domain and the mailboxes to restore that the archive holds; a sentence if the
    one mailbox asked for is not in it."""
    params = job.params
    mailbox_id = params.get("mailbox_id")
    if mailbox_id:
        mailboxes = Mailbox.objects.select_related("domain").filter(pk=mailbox_id)
    else:
        mailboxes = Mailbox.objects.select_related("domain").filter(
            domain_id=params.get("domain_id")
        )
    mailboxes = list(mailboxes.order_by("local_part"))
    if not mailboxes:
        raise jobs.PermanentJobError("The mailbox or the domain is gone.")
    archived = {m.lower() for m in entry.get("mailboxes", [])}
    boxes = [
        restore_run.Box(m.local_part.lower(), max(int(m.quota_mb or 0), 0) * 1024 * 1024)
        for m in mailboxes
        if m.local_part.lower() in archived
    ]
    if mailbox_id and not boxes:
        box = mailboxes[0]
        raise jobs.PermanentJobError(
            f"{box.local_part}@{box.domain.name} is not in this archive (excluded or purged)."
        )
    if not boxes:
        raise jobs.PermanentJobError("No mailbox of the domain is in this archive.")
    return mailboxes[0].domain, boxes


@jobs.handler(ARCHIVE_RESTORE_JOB)
def run_archive_restore(job: Job, reporter: jobs.Reporter) -> dict:
    from deploy.desired import os_family
    from deploy.models import DomainPlacement
    from deploy.nodes import session
    from deploy.services.probes import PYTHON

    copy = OffnodeCopy.objects.filter(pk=job.params["copy_id"]).select_related("target").first()
    if copy is None or copy.target is None:
        raise jobs.PermanentJobError("The archive copy is gone.")
    driver = drivers.driver_for(copy.target)
    try:
        manifest = offnode_archive.read_manifest(driver, copy.domain_name)
        found = [a for a in manifest["archives"] if a["snapshot"] == job.params["snapshot"]]
        if not found:
            raise jobs.PermanentJobError("The target no longer keeps this archive.")
        entry = found[-1]
        domain, boxes = _boxes(job, entry)
        placement = DomainPlacement.objects.filter(domain=domain).select_related("node").first()
        if placement is None:
            raise jobs.PermanentJobError("The domain is not placed on an IMAP node.")
        node = placement.node
        # Jobs started before modes existed restored one mailbox into a new folder.
        params = {
            **job.params,
            "mode": job.params.get("mode") or restore.NEW_FOLDER,
            "folder": job.params.get("folder"),
        }

        def save_params(new: dict) -> None:
            Job.objects.filter(pk=job.pk).update(params=new)

        one = boxes[0].key if job.params.get("mailbox_id") else None
        with session(node) as conn:
            folder = extract(conn, driver, manifest["archives"], entry, one, job.pk)
            reporter.say(
                gettext_noop("archive of %(snapshot)s read from %(target)s"),
                snapshot=entry["snapshot"],
                target=copy.target.name,
            )
            archived = _Archived(
                entry["snapshot"], domain, _taken_at(entry["snapshot"], entry["at"])
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
            try:
                result = restorer.copy(restorer.plan(boxes))
            except restore_run.RestoreError:
                restorer.abort(boxes)
                conn.run(["rm", "-rf", "--", folder])
                raise
            conn.run(["rm", "-rf", "--", folder])
    except (restore_run.RestoreError, drivers.TargetError) as exc:
        raise jobs.PermanentJobError(str(exc)) from exc
    finally:
        driver.close()
    return {**result, "snapshot": entry["snapshot"]}
