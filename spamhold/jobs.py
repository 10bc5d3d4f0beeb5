"""Job handlers of held mail: bulk outcomes and on-demand ingestion, with progress."""

from __future__ import annotations

from typing import Any

from ums import context, jobs, scoping
from ums.models import Job

from . import actions, ingest
from .models import HeldMessage, Status
from .outcomes import OutcomeReport

# Failed ids kept in a job's result (the log has the rest of the story).
MAX_LISTED = 200


def _actor() -> Any:
    # jobs.run sets the requesting administrator as the context's actor.
    return context.current().actor


@jobs.handler("spamhold.bulk")
def bulk(job: Job, reporter: jobs.Reporter) -> dict:
    """Apply one outcome to a list of ids or to everything a filter matched, in chunks."""
    actor = _actor()
    outcome = job.params["outcome"]
    report = OutcomeReport()
    if "ids" in job.params:
        ids = [int(i) for i in job.params["ids"]]
        total = len(ids)
        reporter.progress(0, total)
        for start in range(0, total, actions.CHUNK):
            chunk = ids[start : start + actions.CHUNK]
            report.merge(actions.apply_outcome(actor=actor, outcome=outcome, ids=chunk))
            reporter.progress(min(start + len(chunk), total), total)
    else:
        # Imported here: the query module belongs to the API layer's engineer and is only
        # needed by filtered jobs.
        from .query import apply_filters

        queryset = HeldMessage.objects.filter(status=Status.ONHOLD)
        if actor is not None:
            queryset = scoping.scope_queryset(queryset, actor)
        queryset = apply_filters(queryset, job.params["filters"])
        max_id = job.params.get("max_id")
        if max_id is None:
            return {"counts": report.counts(), "failed": []}
        queryset = queryset.filter(pk__lte=max_id)
        total = queryset.count()
        reporter.progress(0, total)
        last, handled = 0, 0
        while True:
            # Keyset over ids: failed messages (on hold again) are not picked up twice.
            chunk = list(
                queryset.filter(pk__gt=last)
                .order_by("pk")
                .values_list("pk", flat=True)[: actions.CHUNK]
            )
            if not chunk:
                break
            last = chunk[-1]
            report.merge(actions.apply_outcome(actor=actor, outcome=outcome, ids=chunk))
            handled += len(chunk)
            reporter.progress(min(handled, max(total, handled)), max(total, handled))
    counts = report.counts()
    reporter.log(
        "done {done}, already handled {already}, failed {failed}, not found {notFound}".format(
            **counts
        )
    )
    for item in report.failed[:MAX_LISTED]:
        reporter.log(f"message {item['id']}: {item['error']}")
    return {
        "counts": counts,
        "failed": report.failed[:MAX_LISTED],
        "warnings": report.warnings[:MAX_LISTED],
    }


@jobs.handler("spamhold.refresh")
def refresh(job: Job, reporter: jobs.Reporter) -> dict:
    """Ingest the hold queues of the job's nodes now."""
    wanted = set(job.params.get("node_ids") or [])
    nodes = [n for n in ingest.smtp_nodes() if n.pk in wanted]
    reporter.progress(0, len(nodes))

    def done(result: ingest.IngestResult, count: int, total: int) -> None:
        if result.error:
            reporter.log(f"{result.node_name}: {result.error}")
        elif result.skipped:
            reporter.log(f"{result.node_name}: being read by another run, skipped")
        else:
            reporter.log(
                f"{result.node_name}: {result.in_queue} held, {result.new} new, "
                f"{result.gone} left the queue"
            )
        reporter.progress(count, total)

    results = ingest.sweep(nodes, on_result=done)
    errors = [r for r in results if r.error]
    if errors and len(errors) == len(results):
        raise jobs.PermanentJobError("; ".join(f"{r.node_name}: {r.error}" for r in errors))
    return {"nodes": [r.as_dict() for r in results]}
