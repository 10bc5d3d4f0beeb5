"""Celery tasks of the machinery: the generic job runner."""

from __future__ import annotations

from celery import shared_task

from ums import jobs


@shared_task(acks_late=True, reject_on_worker_lost=True, name="ums.run_job")
def run_job(job_id: int) -> str:
    jobs.load_handlers()
    return jobs.run(job_id)
