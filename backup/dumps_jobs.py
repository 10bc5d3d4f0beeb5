"""Jobs of controller dumps: make a dump on every dump target, check the dumps of one
target, and the daily scheduler (Celery beat, ``UMS_DUMP_TIME``).

A dump job run again after its worker died (the reconciler re-drives it) keeps its name
(from the job's id and creation time), skips targets whose manifest for it is already
there and rewrites the rest; its staging folder and the partial objects a dead run left
on a target are removed on the way.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_noop

from ums import auditing, jobs
from ums.models import Job

from . import crypto, drivers, dumps
from .dumps_actions import CHECK_JOB, DUMP_JOB, dump_targets, enqueue_dump
from .models import BackupTarget, Dump


def record_listing(
    target: BackupTarget, listing: dumps.Listing, checks: dict[str, str] | None = None
) -> None:
    """Make the target's :class:`Dump` rows what ``listing`` found; ``checks`` maps dump
    names just verified to "" (sound) or what is wrong."""
    checks = checks or {}
    now = timezone.now()
    with transaction.atomic():
        existing = {d.name: d for d in Dump.objects.select_for_update().filter(target=target)}
        seen = set(listing.complete) | set(listing.unreadable)
        Dump.objects.filter(target=target).exclude(name__in=seen).delete()
        for name, manifest in listing.complete.items():
            row = existing.get(name) or Dump(target=target, name=name)
            row.customer_path = target.customer_path
            row.created_at = parse_datetime(manifest.get("created_at") or "")
            row.size_bytes = int(manifest.get("total_size") or 0)
            row.object_count = len(manifest.get("objects") or []) + 1
            row.observed_at = now
            if name in checks:
                row.status = Dump.DAMAGED if checks[name] else Dump.OK
                row.status_message = checks[name][:2000]
                row.checked_at = now
            elif row.pk is None:
                row.status = Dump.WRITTEN
            row.save()
        for name, why in listing.unreadable.items():
            row = existing.get(name) or Dump(target=target, name=name)
            row.customer_path = target.customer_path
            row.status, row.status_message = Dump.UNREADABLE, why[:2000]
            row.observed_at = row.checked_at = now
            row.save()


def _running_names() -> set[str]:
    rows = Job.objects.filter(kind=DUMP_JOB, status__in=(Job.PENDING, Job.RUNNING))
    return {dumps.dump_name(j.created_at, j.pk) for j in rows.only("pk", "created_at")}


def _to_target(
    target: BackupTarget, manifest: dict[str, Any], staged: list, reporter: jobs.Reporter
) -> None:
    name = manifest["name"]
    driver = drivers.driver_for(target)
    try:
        listing = dumps.read_listing(driver)
        for gone in dumps.remove_partial(driver, listing, keep=_running_names() | {name}):
            reporter.say(
                gettext_noop("%(target)s: removed the partial dump %(dump)s"),
                target=target.name,
                dump=gone,
            )
        if name in listing.complete:
            reporter.say(
                gettext_noop("%(target)s: already holds %(dump)s"), target=target.name, dump=name
            )
        else:
            written = dumps.upload(driver, manifest, staged)
            listing.complete[name] = manifest
            reporter.say(
                gettext_noop("%(target)s: wrote %(dump)s (%(bytes)s bytes)"),
                target=target.name,
                dump=name,
                bytes=written,
            )
        for old in dumps.apply_retention(driver, listing, settings.UMS_DUMP_KEEP):
            reporter.say(
                gettext_noop("%(target)s: deleted %(dump)s (retention)"),
                target=target.name,
                dump=old,
            )
        record_listing(target, listing)
    finally:
        driver.close()


@jobs.handler(DUMP_JOB)
def dump_controller(job: Job, reporter: jobs.Reporter) -> dict:
    """Stage one dump, then write it to every dump target, manifest last."""
    targets = list(dump_targets())
    if not targets:
        raise jobs.PermanentJobError("No backup target is configured for dumps.")
    name = dumps.dump_name(job.created_at, job.pk)
    reporter.progress(0, len(targets) + 1)
    failed: dict[str, str] = {}
    with dumps.Staging(name) as stage:
        try:
            head = dumps.build(stage, job_id=job.pk, created_at=job.created_at, say=reporter.say)
        except (dumps.DumpError, dumps.dumps_pg.ToolError) as exc:
            raise jobs.PermanentJobError(str(exc)) from exc
        manifest = dumps.full_manifest(head, stage.objects)
        reporter.progress(1)
        for done, target in enumerate(targets, start=2):
            try:
                _to_target(target, manifest, stage.objects, reporter)
            except (drivers.TargetError, crypto.DecryptionError, OSError) as exc:
                failed[target.name] = str(exc)
                reporter.say(
                    gettext_noop("%(target)s: the dump failed: %(error)s"),
                    target=target.name,
                    error=str(exc),
                )
            reporter.progress(done)
    written = [t.name for t in targets if t.name not in failed]
    with transaction.atomic():
        auditing.record(
            "backup_dump.written",
            object_type="ums.job",
            object_id=job.pk,
            object_repr=name,
            customer_path=job.customer_path,
            extra={
                "dump": name,
                "targets": written,
                "failed": failed,
                "size": manifest["total_size"],
            },
        )
    if failed:
        raise jobs.PermanentJobError(
            "The dump could not be written to: "
            + "; ".join(f"{t}: {e}" for t, e in sorted(failed.items()))
        )
    return {"dump": name, "targets": written, "size": manifest["total_size"]}


@jobs.handler(CHECK_JOB)
def check_dumps(job: Job, reporter: jobs.Reporter) -> dict:
    """Read back every dump on a target and compare each object with its manifest."""
    target = BackupTarget.objects.filter(pk=job.params.get("target_id")).first()
    if target is None:
        raise jobs.PermanentJobError("The backup target was deleted.")
    driver = drivers.driver_for(target)
    checks: dict[str, str] = {}
    try:
        listing = dumps.read_listing(driver)
        reporter.progress(0, len(listing.complete))
        for done, (name, manifest) in enumerate(sorted(listing.complete.items()), start=1):
            problems = dumps.verify(driver, name, manifest)
            checks[name] = "; ".join(problems)
            if problems:
                reporter.say(
                    gettext_noop("%(dump)s is damaged: %(problems)s"),
                    dump=name,
                    problems=checks[name],
                )
            else:
                reporter.say(gettext_noop("%(dump)s: every checksum matches"), dump=name)
            reporter.progress(done)
    except (drivers.TargetError, crypto.DecryptionError) as exc:
        raise jobs.PermanentJobError(str(exc)) from exc
    finally:
        driver.close()
    record_listing(target, listing, checks)
    damaged = sorted(n for n, p in checks.items() if p)
    if damaged or listing.unreadable:
        raise jobs.PermanentJobError(
            "Damaged dumps: " + ", ".join(damaged + sorted(listing.unreadable))
        )
    return {"checked": len(checks)}


# ------------------------------------------------------------------------ schedule


def last_slot(now: dt.datetime, at: str) -> dt.datetime:
    """The latest daily time ``at`` ("HH:MM", UTC) not after ``now``."""
    hour, minute = (int(p) for p in at.split(":"))
    slot = now.astimezone(dt.UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return slot if slot <= now else slot - dt.timedelta(days=1)


def schedule(now: dt.datetime | None = None) -> dict[str, Any]:
    """Start the daily dump when its time has passed and no dump was started since."""
    at = getattr(settings, "UMS_DUMP_TIME", "")
    if not at:
        return {"skipped": "scheduled dumps are off (UMS_DUMP_TIME is empty)"}
    now = now or timezone.now()
    slot = last_slot(now, at)
    since = Job.objects.filter(kind=DUMP_JOB, created_at__gte=slot)
    if since.exclude(status__in=(Job.FAILED, Job.CANCELLED)).exists():
        return {"skipped": "already started since the last slot"}
    # A failed dump (a target away, a full disk) is tried again every
    # UMS_DUMP_RETRY_MINUTES until one succeeds, not only at the next day's slot.
    failed = since.order_by("-finished_at").first()
    retry = dt.timedelta(minutes=settings.UMS_DUMP_RETRY_MINUTES)
    if failed is not None and (not retry or (failed.finished_at or now) > now - retry):
        return {"skipped": "the last dump failed; retrying later"}
    target = dump_targets().select_related("customer").first()
    if target is None:
        return {"skipped": "no dump target"}
    job = enqueue_dump(None, "Scheduled controller dump", target.customer_path)
    return {"started": job.pk}


@shared_task(name="backup.schedule_dump", acks_late=True)
def schedule_dump() -> Any:
    return schedule()
