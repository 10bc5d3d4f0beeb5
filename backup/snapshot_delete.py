"""Delete one snapshot by hand (portal and API), as an audited job, so nobody has to run
``zfs destroy`` on a node: the job destroys it on the node and then makes the listing
what the node reports for that dataset, so the list stays true.

Refused while an off-node copy continues from the snapshot (the next copy would have no
base). A snapshot a restore or an export is reading (a dependent clone) fails the job
with a sentence saying so. Run again, the job finds the snapshot gone and only fixes
the listing.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from servers.models import Node
from tenants import permissions as perms
from ums import auditing, jobs
from ums.actions import action, require_in_scope, require_permission
from ums.models import Job

from . import snapshots
from .models import Snapshot

DELETE_JOB = "backup.delete_snapshot"


def copy_base(snapshot: Snapshot) -> bool:
    """Whether an off-node copy of the domain continues from this snapshot."""
    from .models_offnode import OffnodeCopy

    domain = snapshot.dataset.rsplit("/", 1)[-1]
    return (
        OffnodeCopy.objects.filter(domain_name=domain, last_snapshot=snapshot.name)
        .exclude(kind=OffnodeCopy.ARCHIVE)
        .exists()
    )


@action
def start_snapshot_delete(*, actor: Any, snapshot: Snapshot) -> Job:
    """Destroy ``snapshot`` on its node as a job (audited ``snapshot.delete``)."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(snapshot, actor)
    if copy_base(snapshot):
        raise ValidationError(
            {
                "snapshot": _(
                    "An off-node copy continues from this snapshot: it is kept until the "
                    "next copy has a newer one."
                )
            }
        )
    full = f"{snapshot.dataset}@{snapshot.name}"
    job = jobs.enqueue(
        DELETE_JOB,
        actor=actor,
        title=_("Delete snapshot %(name)s") % {"name": full},
        customer_path=snapshot.customer_path,
        target=snapshot.domain or snapshot.node,
        params={
            "node_id": snapshot.node_id,
            "dataset": snapshot.dataset,
            "name": snapshot.name,
        },
    )
    auditing.record(
        "snapshot.delete",
        obj=snapshot,
        customer_path=snapshot.customer_path,
        extra={"job": job.pk, "snapshot": full, "tier": snapshot.tier},
    )
    return job


@jobs.handler(DELETE_JOB)
def delete_snapshot(job: Job, reporter: jobs.Reporter) -> dict:
    from deploy.nodes import session

    node = Node.objects.filter(pk=job.params.get("node_id")).first()
    if node is None:
        raise jobs.PermanentJobError("The node was deleted.")
    dataset, name = job.params["dataset"], job.params["name"]
    try:
        with session(node) as conn:
            snapshots.destroy(conn, dataset, name, busy_ok=False)
            parent = dataset.rsplit("/", 1)[0]
            listed = {s.name for s in snapshots.read(conn, parent).get(dataset, [])}
    except snapshots.SnapshotError as exc:
        raise jobs.PermanentJobError(str(exc)) from exc
    # Observed state: the rows of this dataset the node no longer lists go.
    Snapshot.objects.filter(node=node, dataset=dataset).exclude(name__in=listed).delete()
    reporter.say(gettext_noop("%(snapshot)s destroyed"), snapshot=f"{dataset}@{name}")
    return {"deleted": f"{dataset}@{name}"}
