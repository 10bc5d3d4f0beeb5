"""Celery tasks of the machinery: the generic job runner and the reconciler loop."""

from __future__ import annotations

from celery import shared_task

from ums import jobs


@shared_task(acks_late=True, reject_on_worker_lost=True, name="ums.run_job")
def run_job(job_id: int) -> str:
    jobs.load_handlers()
    return jobs.run(job_id)


@shared_task(name="ums.reconcile", ignore_result=True)
def reconcile() -> dict:
    """One pass of every registered reconciler (see :mod:`ums.reconcile`)."""
    from ums import reconcile as reconcile_loop

    jobs.load_handlers()
    return reconcile_loop.run_all()
