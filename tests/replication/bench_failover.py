"""The failover-time benchmark's scenario (run by ``benchmarks/failover.py``, never by the
suite: its name does not match ``test_*.py``; no timed assert, only figures written to
``UMS_BENCH_JSON``).

The repl_fleet of the node tests (IMAP A and B with zfs-fuse, one SMTP node, Postfix and
Courier). Each run measures from "primary offline" (its namespace stopped: sshd and
every daemon) to "mail deliverable and readable again": a probe message sent through the
SMTP node right after the kill (it is deferred) reads back over IMAPS on the new primary.

* **automatic**: what beat runs, at the product's default intervals unless the
  ``UMS_BENCH_*`` variables say otherwise: the liveness probe of automatic-failover
  primaries every ``PROBE_INTERVAL`` seconds (what detects the death), the metric sweep
  every ``METRICS_INTERVAL`` seconds and the replication scheduler every
  ``CHECK_INTERVAL`` seconds, with a policy of automatic failover after ``DELAY`` seconds
  (unset: the policy's default); A dies, B takes over.
* **manual**: A is brought back (fenced by its converge) and resynced as a replica, then B
  dies and the administrator clicks *Fail over* at once (the API's failover action); A
  takes over. Detection is the administrator's, not measured.

``UMS_BENCH_ROUNDS`` rounds (B comes back as a replica after each), so every run switches
between the same two nodes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from audit.models import AuditRecord
from deploy import dirty, metrics
from deploy.models import DomainPlacement
from replication import autofailover, policy, tasks
from replication.models import DomainReplica
from servers.models import Node
from tests.converge.fleet import Fleet
from tests.fixtures import Cast, token_client
from ums import jobs
from ums.models import Job

from .beat import beat
from .nodes import DOMAIN, A, B, bring_back, imaps_bodies, replicated_domain, send

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
METRICS_INTERVAL = float(
    os.environ.get("UMS_BENCH_METRICS_INTERVAL") or settings.UMS_METRICS_INTERVAL
)
CHECK_INTERVAL = float(
    os.environ.get("UMS_BENCH_CHECK_INTERVAL") or settings.UMS_REPLICATION_CHECK_INTERVAL
)
PROBE_INTERVAL = float(
    os.environ.get("UMS_BENCH_PROBE_INTERVAL") or settings.UMS_FAILOVER_PROBE_INTERVAL
)
DELAY = int(os.environ.get("UMS_BENCH_FAILOVER_DELAY") or policy.DEFAULT.failover_delay_seconds)
ROUNDS = int(os.environ.get("UMS_BENCH_ROUNDS", "2"))
LIMIT = 300.0  # a run that takes longer is reported as not recovered


def _probe_readable(f: Fleet, index: int, token: str, since: float) -> float | None:
    """Seconds from ``since`` until ``token`` reads back over IMAPS on node ``index``."""
    while time.monotonic() - since < LIMIT:
        with contextlib.suppress(Exception):  # not serving the domain yet
            if token.encode() in imaps_bodies(f, index):
                return time.monotonic() - since
        time.sleep(0.25)
    return None


def _kill_and_probe(f: Fleet, index: int) -> tuple[float, str]:
    f.tnodes[index].stop()
    killed = time.monotonic()
    token = f"probe-{secrets.token_hex(5)}"
    send(f, f"alice@{DOMAIN}", token)  # accepted by the SMTP node, deferred
    return killed, token


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def _since(later: datetime.datetime | None, earlier: datetime.datetime) -> float | None:
    return None if later is None else (later - earlier).total_seconds()


def _failover_job() -> Job:
    job = Job.objects.filter(kind="replication.failover").order_by("-pk").first()
    assert job is not None and job.status == Job.SUCCEEDED, job and (job.log, job.error)
    return job


def _automatic(f: Fleet, nodes: list[Node], dead: int, new: int) -> dict:
    """Beat's loops: the probe finds ``dead`` down and fails over after the policy's delay."""
    stop = threading.Event()
    probed: list[dict] = []
    threads = [
        beat(stop, METRICS_INTERVAL, lambda: metrics.sweep(nodes)),
        beat(stop, CHECK_INTERVAL, tasks.schedule),
        beat(stop, PROBE_INTERVAL, lambda: probed.append(autofailover.run())),
    ]
    # A collection and an answered probe before the kill (the sweep runs first thing).
    while not probed:
        time.sleep(0.2)
    time.sleep(2)
    killed, token = _kill_and_probe(f, dead)
    killed_at = timezone.now()
    readable = _probe_readable(f, new, token, killed)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    job = _failover_job()
    decided = (
        AuditRecord.objects.filter(action="replication.auto_failover", timestamp__gte=killed_at)
        .order_by("-pk")
        .first()
    )
    return {
        "offline_to_readable_s": _round(readable),
        "detected_down_after_s": _round(decided and _since(decided.timestamp, killed_at)),
        "failover_job_started_after_s": _round(_since(job.created_at, killed_at)),
        "failover_job_s": _round(_since(job.finished_at, job.created_at)),
    }


def _manual(client, f: Fleet, domain_id: int, dead: int, new: int) -> dict:
    """The administrator clicks *Fail over* as soon as ``dead`` is down."""
    killed, token = _kill_and_probe(f, dead)
    response = client.post(f"/api/v1/replication/domains/{domain_id}/failover/")
    assert response.status_code == 202, response.content
    readable = _probe_readable(f, new, token, killed)
    job = _failover_job()
    return {
        "offline_to_readable_s": _round(readable),
        "failover_job_s": _round(_since(job.finished_at, job.created_at)),
    }


def _back_as_replica(f: Fleet, nodes: list[Node], index: int, domain_id: int) -> None:
    """The dead node comes back: seen again, fenced by its converge, resynced."""
    bring_back(f, index)
    metrics.sweep(nodes)
    dirty.enqueue(f.nodes[index], reason="back")
    tasks.schedule()
    fenced = DomainReplica.objects.get(domain_id=domain_id, node=f.nodes[index])
    assert fenced.state == DomainReplica.SYNCED, fenced.last_error


def _summary(runs: list[dict]) -> dict:
    times = sorted(r["offline_to_readable_s"] for r in runs if r["offline_to_readable_s"])
    return {
        "runs": runs,
        "offline_to_readable_s": {
            "min": times[0] if times else None,
            "median": times[len(times) // 2] if times else None,
            "max": times[-1] if times else None,
            "not_recovered": len(runs) - len(times),
        },
    }


def test_failover_time(cast: Cast, repl_fleet: Fleet) -> None:
    jobs.load_handlers()
    f = repl_fleet
    client = token_client(cast.sub_admin)
    response = client.post(
        "/api/v1/replication/policies/",
        {
            "customer": cast.ministry.pk,
            "autoFailover": True,
            "failoverDelaySeconds": DELAY,
            "syncIntervalMinutes": 1,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    domain, _ = replicated_domain(f, client, cast.ministry.pk)
    nodes = list(Node.objects.filter(pk__in=[n.pk for n in f.nodes]))
    automatic: list[dict] = []
    manual: list[dict] = []
    primary, replica = A, B
    for _ in range(ROUNDS):
        automatic.append(_automatic(f, nodes, primary, replica))
        _back_as_replica(f, nodes, primary, domain["id"])
        manual.append(_manual(client, f, domain["id"], replica, primary))
        _back_as_replica(f, nodes, replica, domain["id"])
    assert DomainPlacement.objects.get(domain_id=domain["id"]).node_id == f.nodes[primary].pk
    results = {
        "metrics_interval_s": METRICS_INTERVAL,
        "check_interval_s": CHECK_INTERVAL,
        "probe_interval_s": PROBE_INTERVAL,
        "probe_failures": settings.UMS_FAILOVER_PROBE_FAILURES,
        "failover_delay_s": DELAY,
        "rounds": ROUNDS,
        "target_s": 60,
        "automatic": _summary(automatic),
        "manual": _summary(manual),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(results, indent=1))
    out = os.environ.get("UMS_BENCH_JSON")
    if out:
        Path(out).write_text(json.dumps(results, indent=1) + "\n")
