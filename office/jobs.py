"""The "Check the office server" node action: the office node's health, PDF export included.

The same probe converge runs after a restart (:mod:`deploy.services.collabora.probe`):
WOPI discovery, capabilities and a real document converted to PDF through coolwsd's
``convert-to`` API, from the node itself. A failure raises the node alert
``office_unhealthy`` (shown on the node's page) and fails the job with what the probe saw;
a pass resolves the alert.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from deploy import desired
from deploy.connector.base import ConnectorError
from deploy.nodes import session
from deploy.services.base import ProbeFailed
from deploy.services.collabora import config, probe
from servers import actions as server_actions
from servers.models import Node
from ums import jobs
from ums.models import Job

JOB = "node.office_check"
ALERT_KIND = "office_unhealthy"
#: A health check answers within this many seconds of retrying (converge waits longer).
CHECK_SECONDS = 5


@jobs.handler(JOB)
def check_office_node(job: Job, reporter: jobs.Reporter) -> dict[str, Any]:
    node = Node.objects.filter(pk=job.params.get("node_id")).first()
    if node is None:
        raise jobs.PermanentJobError("the node no longer exists")
    state = desired.build(node)
    port = config.port(state)
    reporter.progress(0, 1)
    try:
        with session(node) as conn:
            line = probe.export_pdf(conn, state, port, CHECK_SECONDS)
    except ProbeFailed as exc:
        message = _("The office server on %(host)s failed its check: %(reason)s") % {
            "host": node.hostname,
            "reason": exc.output,
        }
        server_actions.raise_alert(node, ALERT_KIND, message)
        raise jobs.PermanentJobError(exc.output) from exc
    except ConnectorError as exc:
        raise jobs.PermanentJobError(f"{type(exc).__name__}: {exc}") from exc
    server_actions.resolve_alerts(node, ALERT_KIND)
    reporter.progress(1, 1)
    reporter.say(gettext_noop("office server healthy: %(line)s"), line=line)
    return {"healthy": True, "probe": line, "pdf_export": True}
