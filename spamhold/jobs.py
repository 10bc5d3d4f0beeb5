"""Job handlers of held mail: applying a release/delete/expire request, and on-demand
ingestion, with progress."""

from __future__ import annotations

from django.utils.translation import gettext_noop

from ums import jobs
from ums.models import Job

from . import ingest, intents


@jobs.handler("spamhold.apply")
def apply(job: Job, reporter: jobs.Reporter) -> dict:
    """Apply one held-mail request on its nodes (see :mod:`spamhold.intents`)."""
    return intents.run(int(job.params["intent"]), job.pk, reporter)


@jobs.handler("spamhold.refresh")
def refresh(job: Job, reporter: jobs.Reporter) -> dict:
    """Ingest the hold queues of the job's nodes now."""
    wanted = set(job.params.get("node_ids") or [])
    nodes = [n for n in ingest.smtp_nodes() if n.pk in wanted]
    reporter.progress(0, len(nodes))

    def done(result: ingest.IngestResult, count: int, total: int) -> None:
        if result.error:
            reporter.say(
                gettext_noop("%(node)s: %(error)s"), node=result.node_name, error=result.error
            )
        elif result.skipped:
            reporter.say(
                gettext_noop("%(node)s: being read by another run, skipped"),
                node=result.node_name,
            )
        else:
            reporter.say(
                gettext_noop("%(node)s: %(held)s held, %(new)s new, %(gone)s left the queue"),
                node=result.node_name,
                held=result.in_queue,
                new=result.new,
                gone=result.gone,
            )
        reporter.progress(count, total)

    results = ingest.sweep(nodes, on_result=done)
    errors = [r for r in results if r.error]
    if errors and len(errors) == len(results):
        raise jobs.PermanentJobError("; ".join(f"{r.node_name}: {r.error}" for r in errors))
    return {"nodes": [r.as_dict() for r in results]}
