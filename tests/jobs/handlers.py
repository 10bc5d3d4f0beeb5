"""Job kinds used only by the tests; imported by the test process and the test worker."""

from __future__ import annotations

from ums import auditing, jobs
from ums.models import Job


@jobs.handler("test.count")
def count_handler(job: Job, reporter: jobs.Reporter) -> dict:
    total = job.params.get("n", 3)
    for i in range(total):
        reporter.progress(i + 1, total)
        reporter.log(f"step {i + 1}")
    # Audit written inside a job carries the requesting administrator and request id.
    auditing.record("test.job_step", object_type="test", object_id=job.pk, object_repr="step")
    return {"counted": total}


@jobs.handler("test.explode")
def explode_handler(job: Job, reporter: jobs.Reporter) -> None:
    raise jobs.PermanentJobError("the node refused")


@jobs.handler("test.sleep")
def sleep_handler(job: Job, reporter: jobs.Reporter) -> dict:
    """Works for ``seconds`` (a slow point the fault tests kill a worker in)."""
    import time

    reporter.log(f"attempt {Job.objects.get(pk=job.pk).attempts} started")
    time.sleep(float(job.params.get("seconds", 1)))
    return {"slept": job.params.get("seconds", 1)}


@jobs.handler("test.once", retriable=False)
def once_handler(job: Job, reporter: jobs.Reporter) -> dict:
    return {"ran": True}


@jobs.handler("test.crash")
def crash_handler(job: Job, reporter: jobs.Reporter) -> None:
    raise ValueError("the disk is full")
