"""Job handlers of the backup app: testing a target and a node's snapshot pass."""

from __future__ import annotations

from django.conf import settings

from servers.models import Node
from ums import jobs
from ums.models import Job

from . import actions, crypto, drivers, snapshot_run
from .models import BackupTarget


@jobs.handler(actions.TEST_JOB)
def test_target(job: Job, reporter: jobs.Reporter) -> dict:
    """Write, read back and delete an encrypted probe; the error says what failed."""
    target = BackupTarget.objects.filter(pk=job.params.get("target_id")).first()
    if target is None:
        raise jobs.PermanentJobError("The backup target was deleted.")
    reporter.log(f"testing {target.kind} target {target.location}")
    driver = None
    try:
        driver = drivers.driver_for(target)
        name = drivers.probe(driver)
    except (drivers.TargetError, crypto.DecryptionError) as exc:
        actions.record_test_result(target.pk, False, str(exc))
        raise jobs.PermanentJobError(str(exc)) from exc
    finally:
        if driver is not None:
            driver.close()
    message = "wrote, read back and deleted an encrypted probe"
    actions.record_test_result(target.pk, True, message)
    reporter.log(message)
    return {"ok": True, "probe": name}


@jobs.handler(actions.SNAPSHOT_JOB)
def snapshot_node(job: Job, reporter: jobs.Reporter) -> dict:
    """Take what is due (or one on-demand snapshot), prune, record what the node lists."""
    from deploy.models import DomainPlacement
    from deploy.nodes import session

    conf = getattr(settings, "UMS_CONVERGE", {})
    if not conf.get("mail_store_pool"):
        raise jobs.PermanentJobError(
            "No ZFS mail store is configured (mail_store_pool in UMS_NODE_SETTINGS)."
        )
    node = Node.objects.filter(pk=job.params.get("node_id")).first()
    if node is None:
        raise jobs.PermanentJobError("The node was deleted.")
    placements = DomainPlacement.objects.filter(node=node).select_related("domain__customer")
    wanted = job.params.get("domain_ids")
    if wanted:
        placements = placements.filter(domain_id__in=wanted)
    domains = [p.domain for p in placements]
    if not domains:
        return {"taken": [], "pruned": []}
    with session(node) as conn:
        return snapshot_run.run_node(
            conn,
            node,
            domains,
            conf=conf,
            manual=bool(job.params.get("manual")),
            log=reporter.log,
        )


# Off-node copies register their handlers on import.
from . import offnode_jobs  # noqa: E402, F401
