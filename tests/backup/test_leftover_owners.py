"""Who owns a leftover restore/archive clone or mount folder, and when a sweep may take it:
the names it recognises (and those it never touches), and the decision from the job
records: a pending or running job's leftovers are kept, so are those of a job that ended
within the grace period and, without such a job, those that appeared within it; the rest
are swept."""

from __future__ import annotations

import datetime

import pytest

from backup import leftover_owners as owners
from backup.archive_restore import ARCHIVE_RESTORE_JOB
from backup.offnode_actions import COPY_JOB, REBUILD_JOB
from backup.restore import FOLDERS_JOB, RESTORE_JOB
from ums.models import Job

NOW = datetime.datetime(2026, 12, 8, 1, 0, tzinfo=datetime.UTC)
GRACE = datetime.timedelta(minutes=10)
LONG_AGO = NOW - datetime.timedelta(hours=2)
JUST_NOW = NOW - datetime.timedelta(minutes=1)
RESTORE = owners.Owner(owners.RESTORE_KINDS, 41)
ARCHIVE = owners.Owner(owners.ARCHIVE_KINDS, 42)
REBUILD = owners.Owner((REBUILD_JOB,))


def facts(kind: str, status: str, finished: datetime.datetime | None = None) -> owners.JobFacts:
    return owners.JobFacts(kind, status, finished)


def decide(owner, job, appeared=LONG_AGO, any_live=False) -> str:
    return owners.decide(owner, job, appeared_at=appeared, any_live=any_live, now=NOW, grace=GRACE)


def test_clone_names_name_their_job_and_nothing_else_is_ours() -> None:
    assert owners.clone_owner("tank/ums-restore-41") == RESTORE
    assert owners.clone_owner("tank/ums-archive-42") == ARCHIVE
    assert set(RESTORE.kinds) == {RESTORE_JOB, FOLDERS_JOB} and ARCHIVE.kinds == (COPY_JOB,)
    for other in (
        "tank/mail/example.org",  # a domain's dataset
        "tank/ums-restore-41/child",
        "tank/mail/ums-restore-41",  # not right under the pool
        "tank/ums-rebuild-example.org",  # the rebuild's staging dataset: its own job's
        "tank/ums-export-7",
        "tank/ums-restore-41x",
        "-o/ums-restore-41",
    ):
        assert owners.clone_owner(other) is None, other


def test_folder_names_under_each_root() -> None:
    restore_root, archive_root = "/var/lib/ums-restore", "/var/lib/ums-archive"
    assert owners.folder_owner(restore_root, "tank-ums-restore-41", "tank") == RESTORE
    # Another pool's folder (another node sharing the file system) is not this node's.
    assert owners.folder_owner(restore_root, "other-ums-restore-41", "tank") is None
    assert owners.folder_owner(archive_root, "ums-archive-42", "tank") == ARCHIVE
    assert owners.folder_owner(archive_root, "restore-43", "tank") == owners.Owner(
        (ARCHIVE_RESTORE_JOB,), 43
    )
    assert owners.folder_owner(archive_root, "rebuild-example.org", "tank") == REBUILD
    for root, name in (
        (archive_root, "tank-ums-restore-41"),
        (restore_root, "ums-archive-42"),
        (archive_root, "notes"),
        (archive_root, "restore-43.old"),
        (archive_root, ".."),
        ("/var/lib", "ums-archive-42"),
    ):
        assert owners.folder_owner(root, name, "tank") is None, (root, name)


@pytest.mark.parametrize("status", [Job.PENDING, Job.RUNNING])
def test_a_live_job_keeps_its_leftovers_however_old(status: str) -> None:
    assert decide(RESTORE, facts(RESTORE_JOB, status)) == owners.KEEP_LIVE
    assert decide(RESTORE, facts(FOLDERS_JOB, status)) == owners.KEEP_LIVE
    assert decide(ARCHIVE, facts(COPY_JOB, status)) == owners.KEEP_LIVE
    # Even a killed job's row that still says running: the reconciler resumes it.
    assert decide(RESTORE, facts(RESTORE_JOB, status), appeared=None) == owners.KEEP_LIVE


@pytest.mark.parametrize("status", Job.FINISHED)
def test_an_ended_job_leaves_its_leftovers_to_the_sweep_after_the_grace(status: str) -> None:
    assert decide(RESTORE, facts(RESTORE_JOB, status, LONG_AGO)) == owners.SWEEP
    assert decide(ARCHIVE, facts(COPY_JOB, status, LONG_AGO)) == owners.SWEEP
    # Its own clean-up may still be under way.
    assert decide(RESTORE, facts(RESTORE_JOB, status, JUST_NOW)) == owners.KEEP_RECENT


def test_a_gone_job_or_another_jobs_row_owns_nothing() -> None:
    assert decide(RESTORE, None) == owners.SWEEP
    # Job 41 is running but it is not a restore: the clone is not its.
    assert decide(RESTORE, facts(COPY_JOB, Job.RUNNING)) == owners.SWEEP
    assert decide(ARCHIVE, facts(RESTORE_JOB, Job.PENDING)) == owners.SWEEP


def test_what_appeared_within_the_grace_or_at_an_unknown_time_is_kept() -> None:
    assert decide(RESTORE, None, appeared=JUST_NOW) == owners.KEEP_RECENT
    assert decide(RESTORE, None, appeared=None) == owners.KEEP_RECENT
    # With its job's row, the grace counts from the job's end (it made the clone while it
    # ran; a clone made later can only be a given-up run's orphan).
    ended = facts(RESTORE_JOB, Job.FAILED, LONG_AGO)
    assert decide(RESTORE, ended, appeared=JUST_NOW) == owners.SWEEP
    assert decide(RESTORE, facts(RESTORE_JOB, Job.FAILED), appeared=JUST_NOW) == (
        owners.KEEP_RECENT
    )


def test_rebuild_folders_are_kept_while_any_rebuild_runs() -> None:
    assert decide(REBUILD, None, any_live=True) == owners.KEEP_LIVE
    assert decide(REBUILD, None) == owners.SWEEP
    assert decide(REBUILD, None, appeared=JUST_NOW) == owners.KEEP_RECENT


@pytest.mark.django_db
def test_job_records_are_read_in_two_queries(django_assert_max_num_queries) -> None:
    running = Job.objects.create(kind=RESTORE_JOB, title="r", status=Job.RUNNING)
    failed = Job.objects.create(kind=COPY_JOB, title="c", status=Job.FAILED, finished_at=LONG_AGO)
    Job.objects.create(kind=REBUILD_JOB, title="b", status=Job.PENDING)
    wanted = [
        owners.Owner(owners.RESTORE_KINDS, running.pk),
        owners.Owner(owners.ARCHIVE_KINDS, failed.pk),
        owners.Owner(owners.ARCHIVE_KINDS, failed.pk + 1000),
        REBUILD,
    ]
    with django_assert_max_num_queries(2):
        jobs, live = owners.jobs_of(wanted)
    assert jobs == {
        running.pk: facts(RESTORE_JOB, Job.RUNNING),
        failed.pk: facts(COPY_JOB, Job.FAILED, LONG_AGO),
    }
    assert live == {REBUILD_JOB}
    assert decide(wanted[0], jobs.get(running.pk)) == owners.KEEP_LIVE
    assert decide(wanted[1], jobs.get(failed.pk)) == owners.SWEEP
    assert decide(wanted[2], jobs.get(failed.pk + 1000)) == owners.SWEEP
