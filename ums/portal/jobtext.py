"""Job titles and failure messages as an administrator reads them, in their own language.

A job's stored ``title`` is written once, in the language of whoever started it. The portal
rebuilds the title from the job's kind and parameters at display time, so a Russian and a
Mongolian administrator each read it in their language; a kind not listed here keeps its
stored title. The msgids are the ones the apps use when they enqueue, so catalogs share one
translation. ``error_summary`` keeps Python tracebacks away from tenant administrators. Log
lines are rendered by :mod:`ums.joblog` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from ums.joblog import I18N_PREFIX, LOG_STAMP, log_entry, render_line, translate_log
from ums.models import Job

# Job log lines live in ums.joblog (handlers outside the portal write them); re-exported
# here for the templates and views that render jobs.
__all__ = [
    "I18N_PREFIX",
    "LOG_STAMP",
    "attach_hosts",
    "describe",
    "error_summary",
    "log_entry",
    "render_line",
    "title",
    "translate_log",
]

# The node actions' labels, as deploy.actions.NODE_ACTIONS spells them (same msgids).
NODE_ACTION_LABELS = {
    "reboot": _("Reboot"),
    "shutdown": _("Shut down"),
    "start_services": _("Start all services"),
    "restart_service": _("Restart a service"),
    "storage_start": _("Start the mail storage"),
    "storage_stop": _("Stop the mail storage"),
    "rotate_key": _("Rotate the controller key"),
    "decommission": _("Decommission"),
    "office_check": _("Office check (PDF export)"),
    "converge_dry_run": _("Show changes (dry run)"),
}
# spamhold.models.Outcome labels (same msgids).
OUTCOME_LABELS = {
    "release": _("Release"),
    "release_allow": _("Release and allow the sender"),
    "delete": _("Delete"),
    "delete_block": _("Delete and block the sender"),
    "expire": _("Expire"),
}
NODE_OBJECT_TYPE = "servers.node"


def error_summary(error: str) -> str:
    """The first line of ``Job.error``; nothing when that line starts a traceback."""
    text = (error or "").strip()
    if not text:
        return ""
    first = text.splitlines()[0].strip()
    if first.startswith("Traceback") or first.startswith('File "'):
        return ""
    return first[:500]


def attach_hosts(jobs: Iterable[Job]) -> None:
    """Give node jobs a ``host_name`` for their titles: one query for the whole list."""
    jobs = list(jobs)
    ids = {
        int(j.object_id)
        for j in jobs
        if j.object_type == NODE_OBJECT_TYPE and j.object_id.isdigit() and len(j.object_id) < 19
    }
    names: dict[int, str] = {}
    if ids:
        node_model = apps.get_model("servers", "Node")
        names = dict(node_model.objects.filter(pk__in=ids).values_list("pk", "hostname"))
    for job in jobs:
        host = names.get(int(job.object_id)) if job.object_id.isdigit() and ids else None
        job.host_name = host


def title(job: Job) -> str:
    """The job's title in the current language (its stored title if the kind is unknown)."""
    params = job.params if isinstance(job.params, dict) else {}
    host = getattr(job, "host_name", None)
    kind = job.kind
    if kind.startswith("node.") and host:
        action = kind.removeprefix("node.")
        if action == "converge":
            if params.get("dry_run"):
                return gettext("Dry run: %(host)s") % {"host": host}
            return gettext("Converge %(host)s") % {"host": host}
        if action == "verify":
            return gettext("Verify %(host)s") % {"host": host}
        label = NODE_ACTION_LABELS.get(action)
        if label is not None:
            text = gettext("%(action)s: %(host)s") % {"action": label, "host": host}
            service = params.get("service")
            return f"{text} ({service})" if service else text
    if kind == "mail.csv_import" and job.progress_total:
        return gettext("Import %(n)d rows from CSV") % {"n": job.progress_total}
    if kind == "spamhold.bulk" and params.get("outcome") in OUTCOME_LABELS:
        return gettext("%(outcome)s held messages") % {"outcome": OUTCOME_LABELS[params["outcome"]]}
    if kind == "spamhold.refresh" and isinstance(params.get("node_ids"), list):
        count = len(params["node_ids"])
        return ngettext(
            "Refresh held mail from %(count)d node", "Refresh held mail from %(count)d nodes", count
        ) % {"count": count}
    return job.title


def describe(job: Any) -> dict[str, Any]:
    """Title and message for templates and the status JSON."""
    return {"title": title(job), "message": error_summary(job.error)}
