"""Job handlers of the backup app: testing a target, a node's snapshot pass, a restore."""

from __future__ import annotations

from django.conf import settings
from django.utils.translation import gettext_noop

from deploy.connector.base import Connector
from servers.models import Node
from ums import jobs
from ums.models import Job

from . import actions, crypto, drivers, leftover_sweep, restore, restore_run, snapshot_run
from .models import BackupTarget, Snapshot


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
        # First, so a snapshot a leftover clone pinned is pruned in this same pass.
        swept = sweep_leftovers(conn, node, snapshot_run.layout(conf), reporter)
        summary = snapshot_run.run_node(
            conn,
            node,
            domains,
            conf=conf,
            manual=bool(job.params.get("manual")),
            log=reporter.log,
        )
    return {**summary, "swept": swept}


def sweep_leftovers(conn: Connector, node: Node, parent: str, reporter: jobs.Reporter) -> dict:
    """What killed restore and archive runs left on the node (:mod:`.leftover_sweep`);
    a failed sweep is reported and does not stop the snapshot pass."""
    try:
        return leftover_sweep.sweep(conn, node, parent.split("/", 1)[0], say=reporter.say)
    except leftover_sweep.SweepError as exc:
        reporter.say(gettext_noop("leftover clones not swept: %(error)s"), error=str(exc))
        return {"errors": [str(exc)]}


@jobs.handler(restore.RESTORE_JOB)
def restore_snapshot(job: Job, reporter: jobs.Reporter) -> dict:
    """Restore a domain, mailbox or folder from a snapshot (see :mod:`backup.restore_run`)."""
    from deploy.desired import os_family
    from deploy.nodes import session
    from deploy.services.probes import PYTHON

    snapshot = Snapshot.objects.select_related("node").filter(pk=job.params["snapshot_id"]).first()
    if snapshot is None:
        raise jobs.PermanentJobError("The snapshot is no longer listed by the node.")
    node = snapshot.node

    def save_params(params: dict) -> None:
        Job.objects.filter(pk=job.pk).update(params=params)

    try:
        with session(node) as conn:
            return restore_run.run(
                conn,
                job.pk,
                dict(job.params),
                python=PYTHON.get(os_family(node.os_id), PYTHON["debian"]),
                save_params=save_params,
                progress=reporter.progress,
                say=reporter.say,
            )
    except restore_run.RestoreError as exc:
        raise jobs.PermanentJobError(str(exc)) from exc


@jobs.handler(restore.FOLDERS_JOB)
def snapshot_folders(job: Job, reporter: jobs.Reporter) -> dict:
    """The folders of a mailbox in a snapshot, for the restore form (read only)."""
    from deploy.desired import os_family
    from deploy.nodes import session
    from deploy.services.probes import PYTHON
    from mail.models import Mailbox

    snapshot = Snapshot.objects.select_related("node").filter(pk=job.params["snapshot_id"]).first()
    mailbox = Mailbox.objects.select_related("domain").filter(pk=job.params["mailbox_id"]).first()
    if snapshot is None or mailbox is None:
        raise jobs.PermanentJobError("The snapshot or the mailbox is gone.")
    node = snapshot.node
    try:
        with session(node) as conn:
            folders = restore_run.list_folders(
                conn,
                job.pk,
                snapshot,
                mailbox,
                python=PYTHON.get(os_family(node.os_id), PYTHON["debian"]),
            )
    except restore_run.RestoreError as exc:
        raise jobs.PermanentJobError(str(exc)) from exc
    for name, count in folders:
        reporter.say(gettext_noop("%(folder)s: %(count)d message(s)"), folder=name, count=count)
    return {"folders": folders}


# Controller dumps, Maildir exports and off-node copies register their handlers on import.
from . import (  # noqa: E402
    archive_restore,  # noqa: F401
    dumps_jobs,  # noqa: F401
    export_job,  # noqa: F401
    offnode_jobs,  # noqa: F401
    offnode_verify_run,  # noqa: F401
    snapshot_delete,  # noqa: F401
    tiering,  # noqa: F401
)
