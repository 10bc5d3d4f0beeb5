"""Make sure a job the demo started has run, whatever runs jobs in this installation."""

from __future__ import annotations

import time

from ums import jobs
from ums.models import Job


def finish(job_id: int) -> str:
    """Run the job here unless a worker (or the in-process runner) already has; its status.

    Claiming is a conditional UPDATE, so this never runs a job twice. With a broker and
    workers the job may be running elsewhere: wait for it then.
    """
    jobs.load_handlers()
    jobs.run(job_id)
    return wait(job_id)


def wait(job_id: int, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = Job.objects.values_list("status", flat=True).get(pk=job_id)
        if status in Job.FINISHED or time.monotonic() > deadline:
            return status
        time.sleep(0.5)
