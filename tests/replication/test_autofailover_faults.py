"""Automatic failover survives dead workers, on real parts: a real Celery worker and beat
(tests/harness/worker.py) run the probe (``replication.probe``) and the failover job it
starts; IMAP A is the primary, B holds a synced replica, the SMTP node relays.

1. The probe's worker is SIGKILLed in the middle of a run of failed probes of A; A
   answers again while nobody probes, then blips just as the worker comes back. The old
   run must not be completed into a failover of the healthy node: nothing fails over.
2. A dies for good. The worker is SIGKILLed at each step of the automatic failover:
   after the decision is recorded (the audited job exists and hangs in its look at B's
   snapshots, ``zfs get`` on B; nothing switched), after the commit point (the placement
   on B, the epoch bumped, A recorded fenced; the replica's ``zfs set readonly=off``
   hangs on B), and after B's dataset is writable and mounted, before B's converge is
   done (B's ``postfix`` hangs). Each time the worker starts again,
   as systemd would, and the test only waits. The system finishes the failover exactly
   once by itself: one job, one epoch increment, one switch audited, the replica writable
   and mounted on B, the mail deferred meanwhile delivered on B once, and A, once it is
   back, fenced by its converge.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from django.utils import timezone

from audit.models import AuditRecord
from deploy.models import DomainPlacement
from replication.models import DomainEpoch, DomainReplica, PrimaryProbe
from tests.converge.fleet import Fleet
from tests.faults.nodes import Gate, ZfsGate
from tests.fixtures import Cast
from tests.harness.worker import CeleryWorker, celery_stack, wait_for, zfs_fault_env
from ums import jobs
from ums.models import Job

from .nodes import (
    DOMAIN,
    A,
    B,
    auto_failover_domain,
    bring_back,
    imaps_bodies,
    send,
    wait_delivered,
    zprops,
)
from .test_autofailover_node import _failures

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

STALE = 6
INTERVAL = 2  # the probe's, seconds (the least allowed)
DELAY = 20  # the policy's failover delay, seconds
#: Seconds the system gets to finish after a kill (a worker restart takes a few seconds on
#: a busy machine; a dead run is noticed after STALE, run again after the backoff).
HEAL_BOUND = 240


def failover_job() -> Job | None:
    return Job.objects.filter(kind="replication.failover").first()


def epoch(domain_id: int) -> int:
    row = DomainEpoch.objects.filter(domain_id=domain_id).first()
    return row.epoch if row else 0


def restart(worker: CeleryWorker) -> None:
    """As systemd's ``Restart=always`` would (the whole process group was SIGKILLed)."""
    worker.start()


def probe_killed_mid_series(f: Fleet, worker: CeleryWorker, domain_id: int) -> None:
    """Part 1: a worker killed mid-series, a blip at its restart: no failover."""
    a = f.nodes[A]
    wait_for(
        lambda: PrimaryProbe.objects.filter(node=a, failures=0, answered_at__isnull=False).exists(),
        timeout=60,
        what="A probed",
    )
    f.tnodes[A].stop()
    wait_for(lambda: _failures(a) >= 2, timeout=60, what="two failed probes of A")
    worker.kill()
    killed_at = timezone.now()
    f.tnodes[A].start()  # A answers again; nobody sees it
    # Silent for longer than the delay (so the old run would be "down" at once), which is
    # longer than the probe's series gap here (3 intervals + 2 timeouts: 8 s).
    time.sleep(DELAY + 2)
    f.tnodes[A].stop()  # a blip just as the worker comes back
    restart(worker)
    wait_for(
        lambda: PrimaryProbe.objects.filter(
            node=a, checked_at__gt=killed_at, failures__gte=1
        ).exists(),
        timeout=60,
        what="a failed probe after the restart",
    )
    f.tnodes[A].start()
    wait_for(lambda: _failures(a) == 0, timeout=60, what="the count reset by an answered probe")
    assert failover_job() is None, failover_job().log  # type: ignore[union-attr]
    assert not AuditRecord.objects.filter(action="replication.auto_failover").exists()
    assert DomainPlacement.objects.get(domain_id=domain_id).node_id == a.pk
    assert epoch(domain_id) == 0


def test_probe_and_failover_survive_dead_workers_and_fail_over_exactly_once(
    cast: Cast, repl_fleet: Fleet, settings, tmp_path: Path
) -> None:
    jobs.load_handlers()
    f = repl_fleet
    domain, before = auto_failover_domain(f, cast, failoverDelaySeconds=DELAY)
    domain_id = domain["id"]
    dataset = f"{f.pools[A]}/mail/{DOMAIN}"

    settings.UMS_FAILOVER_PROBE_INTERVAL = INTERVAL
    settings.UMS_FAILOVER_PROBE_TIMEOUT = 1
    env = zfs_fault_env(
        settings,
        STALE,
        UMS_AUTO_CONVERGE="true",
        UMS_FAILOVER_PROBE_INTERVAL=str(INTERVAL),
        UMS_FAILOVER_PROBE_TIMEOUT="1",
        UMS_FAILOVER_PROBE_FAILURES="3",
    )
    b_zfs = ZfsGate(f.tnodes[B])
    converge_gate = Gate(f.tnodes[B])  # B's postfix: its converge for the new domain
    try:
        with celery_stack(tmp_path, env=env) as (worker, _beat):
            probe_killed_mid_series(f, worker, domain_id)

            # Part 2: A dies for good; only the probe notices. Mail sent now is deferred.
            f.tnodes[A].stop()
            token = f"during-{secrets.token_hex(4)}"
            send(f, f"alice@{DOMAIN}", token)

            # Killed after the decision is recorded, before the commit point: the job's
            # look at B's snapshots (``zfs get -Hp``) hangs.
            b_zfs.close("get", "-Hp")
            converge_gate.close()
            wait_for(lambda: failover_job() and b_zfs.waiting(), timeout=120, what="the decision")
            worker.kill()
            job = failover_job()
            assert AuditRecord.objects.filter(action="replication.auto_failover").count() == 1
            assert epoch(domain_id) == 0, job.log
            b_zfs.close("set", "readonly=off")
            restart(worker)

            # Killed after the commit point (placement, epoch, A fenced), before promote.
            wait_for(b_zfs.waiting, timeout=HEAL_BOUND, what="the promote on B")
            job.refresh_from_db()
            assert epoch(domain_id) == 1, job.log
            assert DomainPlacement.objects.get(domain_id=domain_id).node_id == f.nodes[B].pk
            fenced = DomainReplica.objects.get(domain_id=domain_id, node=f.nodes[A])
            assert (fenced.state, fenced.fenced_epoch) == (DomainReplica.FENCED, 1)
            assert "is writable and mounted on" not in job.log
            worker.kill()
            b_zfs.open()
            restart(worker)

            # Killed after the promote, while B's converge is still to be done.
            def promoted() -> bool:
                job.refresh_from_db()
                return "is writable and mounted on" in job.log and converge_gate.waiting()

            wait_for(promoted, timeout=HEAL_BOUND, what="the promote done, B's converge due")
            assert zprops(f, B, dataset)["readonly"] == "off"
            worker.kill()
            converge_gate.open()
            restart(worker)

            def finished() -> bool:
                job.refresh_from_db()
                return job.status in Job.FINISHED

            wait_for(finished, timeout=HEAL_BOUND, what="the failover to finish by itself")
            assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
            wait_delivered(f, B, token)

            # A back (a rebooted node): its converge, by the reconciler, fences it.
            bring_back(f, A)

            def a_fenced() -> bool:
                return zprops(f, A, dataset) == {"readonly": "on", "mounted": "no"}

            wait_for(a_fenced, timeout=HEAL_BOUND, what="A fenced by its converge")
    finally:
        b_zfs.remove()
        converge_gate.remove()

    # Exactly once: one job (resumed, never started twice), one epoch increment, one
    # switch audited, one decision audited.
    assert Job.objects.filter(kind="replication.failover").count() == 1
    assert job.attempts >= 3 and job.result["epoch"] == 1, (job.attempts, job.result)
    assert epoch(domain_id) == 1
    assert AuditRecord.objects.filter(action="domain.failover").count() == 1
    assert AuditRecord.objects.filter(action="replication.auto_failover").count() == 1
    assert DomainPlacement.objects.get(domain_id=domain_id).node_id == f.nodes[B].pk
    assert zprops(f, B, dataset) == {"readonly": "off", "mounted": "yes"}
    bodies = imaps_bodies(f, B)
    assert bodies.count(f"hello {before}".encode()) == 1  # synced before the death: kept
    assert bodies.count(f"hello {token}".encode()) == 1  # deferred, delivered once
