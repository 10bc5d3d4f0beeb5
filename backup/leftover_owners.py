"""Who owns a restore or archive clone, or an empty folder under their mount roots, and
whether a sweep may remove it: decided from the controller's job records only.

Every such leftover is named after the job that made it: ``<pool>/ums-restore-<job id>``
(a snapshot restore or the folder listing of the restore form), ``<pool>/ums-archive-<job
id>`` (an off-node copy pass writing Maildir archives), their mountpoint folders, the
archive restore's staging folder ``restore-<job id>`` and the rebuild's staging folder
``rebuild-<domain>`` (any rebuild job). A leftover is **kept** while its job is pending or
running (a resumed job finds and reuses it), and for a grace period after its job ended
(its own clean-up may still be under way) or, with no job of that name, after the
leftover appeared (a folder is created a moment before its clone is mounted on it).
Only then is it swept: its job finished, failed, was cancelled or is gone.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

from ums.models import Job

from .archive_restore import ARCHIVE_RESTORE_JOB
from .offnode_actions import COPY_JOB, REBUILD_JOB
from .restore import FOLDERS_JOB, RESTORE_JOB

#: Jobs that read a snapshot through ``<pool>/ums-restore-<job id>``.
RESTORE_KINDS = (RESTORE_JOB, FOLDERS_JOB)
#: Jobs that read a snapshot through ``<pool>/ums-archive-<job id>``.
ARCHIVE_KINDS = (COPY_JOB,)

_POOL = r"[A-Za-z][A-Za-z0-9_.:-]*"
_ID = r"(?P<id>[0-9]{1,18})"
_RESTORE_CLONE, _ARCHIVE_CLONE = (
    re.compile(f"^{_POOL}/ums-{kind}-{_ID}$") for kind in ("restore", "archive")
)
# Folder names, one level below each root (validated before any reaches a path): a
# restore clone's mountpoint (its pool's name in it), an archive clone's, an archive
# restore's staging folder and a rebuild's staging dataset's mountpoint.
_RESTORE_FOLDER = re.compile(f"^(?P<pool>{_POOL})-ums-restore-{_ID}$")
_ARCHIVE_FOLDER, _STAGING_FOLDER = (re.compile(f"^{n}-{_ID}$") for n in ("ums-archive", "restore"))
_REBUILD_FOLDER = re.compile(r"^rebuild-[A-Za-z0-9][A-Za-z0-9_.:-]*$")

KEEP_LIVE = "live"
KEEP_RECENT = "recent"
SWEEP = "sweep"


@dataclass(frozen=True)
class Owner:
    """The job a leftover belongs to: ``job_id`` of one of ``kinds``, or (``job_id``
    None) any job of ``kinds``."""

    kinds: tuple[str, ...]
    job_id: int | None = None


@dataclass(frozen=True)
class JobFacts:
    kind: str
    status: str
    finished_at: datetime.datetime | None


def grace() -> datetime.timedelta:
    return datetime.timedelta(seconds=int(settings.UMS_BACKUP_SWEEP_GRACE_SECONDS))


def clone_owner(name: str) -> Owner | None:
    """The owner of a dataset that is one of our restore or archive clones; None for
    any other dataset (never touched)."""
    if found := _RESTORE_CLONE.match(name):
        return Owner(RESTORE_KINDS, int(found["id"]))
    if found := _ARCHIVE_CLONE.match(name):
        return Owner(ARCHIVE_KINDS, int(found["id"]))
    return None


def folder_owner(root: str, name: str, pool: str) -> Owner | None:
    """The owner of folder ``name`` right under ``root`` (one of the two mount roots);
    None for a name we did not make (never touched). Restore folders carry their pool's
    name: only this node's pool's are considered."""
    from .offnode_archive import CLONE_ROOT as ARCHIVE_ROOT
    from .restore_run import CLONE_ROOT as RESTORE_ROOT

    if root == RESTORE_ROOT:
        found = _RESTORE_FOLDER.match(name)
        if found and found["pool"] == pool:
            return Owner(RESTORE_KINDS, int(found["id"]))
        return None
    if root != ARCHIVE_ROOT:
        return None
    if found := _ARCHIVE_FOLDER.match(name):
        return Owner(ARCHIVE_KINDS, int(found["id"]))
    if found := _STAGING_FOLDER.match(name):
        return Owner((ARCHIVE_RESTORE_JOB,), int(found["id"]))
    if _REBUILD_FOLDER.match(name):
        return Owner((REBUILD_JOB,))
    return None


def decide(
    owner: Owner,
    job: JobFacts | None,
    *,
    appeared_at: datetime.datetime | None,
    any_live: bool = False,
    now: datetime.datetime,
    grace: datetime.timedelta,
) -> str:
    """:data:`KEEP_LIVE`, :data:`KEEP_RECENT` or :data:`SWEEP` for a leftover of
    ``owner`` whose job row is ``job`` (None: no such job, or ``owner`` names none),
    which appeared at ``appeared_at`` (None: unknown); ``any_live``: a job of
    the owner's kinds is pending or running (for owners that name no job)."""
    mine = job is not None and job.kind in owner.kinds
    if owner.job_id is None and any_live:
        return KEEP_LIVE
    if mine and job.status in (Job.PENDING, Job.RUNNING):
        return KEEP_LIVE
    # The grace counts from the job's end (it made the leftover while it ran), else from
    # when the leftover appeared (its job is gone, or the name is another job's).
    since = job.finished_at if mine and job.finished_at else appeared_at
    if since is None or since > now - grace:
        return KEEP_RECENT
    return SWEEP


def jobs_of(owners: Iterable[Owner]) -> tuple[dict[int, JobFacts], set[str]]:
    """The job rows the owners name (one query) and the kinds, among those of owners
    that name no job, with a pending or running job (one more query, only if needed)."""
    owners = list(owners)
    ids = {o.job_id for o in owners if o.job_id is not None}
    rows = Job.objects.filter(pk__in=ids).values_list("pk", "kind", "status", "finished_at")
    facts = {pk: JobFacts(kind, status, finished) for pk, kind, status, finished in rows}
    kinds = {k for o in owners if o.job_id is None for k in o.kinds}
    live: set[str] = set()
    if kinds:
        live = set(
            Job.objects.filter(kind__in=kinds, status__in=(Job.PENDING, Job.RUNNING))
            .values_list("kind", flat=True)
            .distinct()
        )
    return facts, live
