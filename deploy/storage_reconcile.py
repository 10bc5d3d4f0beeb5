"""The ``storage`` reconciler: a node whose storage is not in the state last requested
(``Node.storage_requested`` != ``storage_applied``: a storage job failed, its node was
unreachable, its worker died) gets a storage job again, unless one is queued or running
or the last one ended less than ``UMS_STORAGE_RETRY_SECONDS`` ago. A quiet pass is one
query on the (small) node table."""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from servers.choices import NodeStatus
from servers.models import Node
from ums import jobs
from ums.models import Job
from ums.reconcile import register

KINDS = ("node.storage_start", "node.storage_stop")


def retry_after() -> datetime.timedelta:
    return datetime.timedelta(seconds=int(settings.UMS_STORAGE_RETRY_SECONDS))


@register("storage")
def storage_requests() -> dict[str, Any]:
    nodes = list(
        Node.objects.exclude(storage_requested=F("storage_applied")).exclude(
            status__in=(NodeStatus.PENDING, NodeStatus.DECOMMISSIONED)
        )
    )
    queued = 0
    for node in nodes:
        recent = Job.objects.filter(kind__in=KINDS, object_id=str(node.pk)).order_by("-pk").first()
        if recent is not None and (
            recent.status in (Job.PENDING, Job.RUNNING)
            or (recent.finished_at and recent.finished_at > timezone.now() - retry_after())
        ):
            continue
        verb = "start" if node.storage_requested == "running" else "stop"
        jobs.enqueue(
            f"node.storage_{verb}",
            actor=None,
            title=f"Storage {verb} (retry): {node.hostname}",
            customer_path=node.customer_path,
            params={"node_id": node.pk},
            target=node,
        )
        queued += 1
    return {"queued": queued} if queued else {}
