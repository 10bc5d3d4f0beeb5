"""Benchmark of issue 12: the reconciler's cost when nothing is pending, and the time from
a worker's death to its work resuming, with a real Celery worker.

1. Seeds 100,000 finished intents of each kind the reconciler looks at: succeeded jobs,
   processed outbox rows and converged nodes (100,000 node rows, each with its converge
   state applied), plus a few running jobs that beat. Then times 300 passes of
   ``ums.reconcile.run_all()`` (every registered reconciler, as beat runs it; target:
   under 50 ms per pass) and prints each reconciler query's plan.
2. Starts a real worker (prefork pool) and beat on the Redis broker with the production
   periods (``UMS_JOB_STALE_SECONDS`` 20, ``UMS_RECONCILE_INTERVAL`` 5), runs a long job,
   and kills: (a) only the pool processes, as the OOM killer does; (b) the whole worker,
   restarted at once as systemd would; (c) a worker on another machine (its own host
   name), for good, while this machine's worker runs. Measured: seconds from the SIGKILL
   until the job runs again (a new claim). Target: under 30 s.

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_reconcile \\
    REDIS_URL=redis://127.0.0.1:6379/1 CELERY_BROKER_URL=redis://127.0.0.1:6379/3 \\
        .venv/bin/python benchmarks/reconcile.py

The database name must contain "bench": it is dropped and recreated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.mail import database_url, recreate_database, stats  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "reconcile.json"
PASS_TARGET_MS = 50.0
RESUME_TARGET_S = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intents", type=int, default=100_000)
    parser.add_argument("--passes", type=int, default=300)
    parser.add_argument("--skip-worker", action="store_true", help="only the reconciler pass")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def setup(url: str) -> None:
    recreate_database(url)
    os.environ["DJANGO_SETTINGS_MODULE"] = "ums.settings"
    os.environ.setdefault("UMS_DB_CONN_MAX_AGE", "600")
    os.environ["UMS_TASKS_IN_PROCESS"] = "true"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def seed(count: int) -> dict[str, int]:
    from django.db import connection

    from servers import actions as server_actions
    from servers.models import Node
    from tenants import actions as tenant_actions

    customer = tenant_actions.create_customer(actor=None, name="Bench Provider", parent=None)
    zone = server_actions.create_zone(actor=None, customer=customer, name="Bench DC")
    started = time.perf_counter()
    batch = 5000
    for start in range(0, count, batch):
        Node.objects.bulk_create(
            [
                Node(
                    customer=customer,
                    customer_path=customer.path,
                    zone=zone,
                    hostname=f"n{i}.bench.example",
                    ssh_address=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                    status="active",
                    roles=["smtp"],
                )
                for i in range(start, min(start + batch, count))
            ]
        )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO deploy_nodeconvergestate (node_id, desired_generation,
                applied_generation, reason, lease_owner, lease_token, running_generation,
                failures, last_error, last_applied_at)
            SELECT id, 7, 7, 'mail changed', '', 7, 7, 0, '', now() FROM servers_node
            """
        )
        cursor.execute(
            """
            INSERT INTO ums_job (kind, title, status, progress_done, progress_total,
                customer_path, requested_by_name, request_id, object_type, object_id,
                params, result, log, error, attempts, created_at, started_at,
                heartbeat_at, finished_at, owner)
            SELECT 'node.converge', 'Converge n' || g, 'succeeded', 1, 1, %s, 'system', '',
                'servers.node', g::text, '{}', '{}', '', '', 1,
                now() - interval '1 day' + g * interval '1 second', now(), now(), now(), ''
            FROM generate_series(1, %s) AS g
            """,
            [customer.path, count],
        )
        # A few jobs running right now, beating: the reconciler looks at them each pass.
        cursor.execute(
            """
            INSERT INTO ums_job (kind, title, status, progress_done, progress_total,
                customer_path, requested_by_name, request_id, object_type, object_id,
                params, result, log, error, attempts, created_at, started_at,
                heartbeat_at, owner)
            SELECT 'node.converge', 'Running ' || g, 'running', 0, 1, %s, 'system', '',
                'servers.node', g::text, '{}', '{}', '', '', 1, now(), now(),
                now() + interval '1 hour', 'elsewhere:' || g
            FROM generate_series(1, 5) AS g
            """,
            [customer.path],
        )
        cursor.execute(
            """
            INSERT INTO ums_outbox (topic, customer_path, payload, created_at, processed_at)
            SELECT 'mail.changed', %s, '{"kind": "mailbox"}',
                now() - interval '1 day' + g * interval '1 second', now()
            FROM generate_series(1, %s) AS g
            """,
            [customer.path, count],
        )
        cursor.execute("ANALYZE")
    return {
        "nodes_converged": count,
        "jobs_succeeded": count,
        "outbox_processed": count,
        "jobs_running": 5,
        "seed_seconds": round(time.perf_counter() - started, 1),
    }


def explain_queries() -> dict[str, str]:
    """The plan of each reconciler's query (EXPLAIN ANALYZE)."""
    from django.db import connection
    from django.db.models import Q
    from django.utils import timezone

    from deploy import dirty
    from ums.models import Job, Outbox

    now = timezone.now()
    querysets = {
        "jobs": Job.objects.filter(
            Q(status=Job.RUNNING) | Q(status=Job.PENDING, next_attempt_at__lte=now)
        ).values_list("pk")[:200],
        "outbox": Outbox.objects.filter(processed_at__isnull=True, created_at__lt=now)
        .order_by("created_at")
        .values_list("pk")[:500],
        "converge": dirty.due_queryset().values_list("pk")[:200],
    }
    plans = {}
    for name, queryset in querysets.items():
        sql, params = queryset.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN ANALYZE {sql}", params)
            plans[name] = "\n".join(row[0] for row in cursor.fetchall())
    return plans


def bench_pass(passes: int) -> dict:
    from ums import reconcile

    reconcile.load()
    for _ in range(20):
        reconcile.run_all()
    samples = []
    for _ in range(passes):
        started = time.perf_counter()
        report = reconcile.run_all()
        samples.append((time.perf_counter() - started) * 1000)
    busy = {k: v for k, v in report.items() if set(v) != {"ms"}}
    if busy:
        raise SystemExit(f"bench: the reconciler found work in a quiet database: {busy}")
    return {"reconcilers": sorted(report), "ms": stats(samples)}


def bench_resume() -> dict:
    from django.db import transaction

    from tests.harness.worker import celery_stack, make_worker, wait_for, worker_environment
    from ums import jobs
    from ums.models import Job

    env = {
        "UMS_CELERY_IMPORTS": "tests.jobs.handlers",
        "UMS_RECONCILE_INTERVAL": "5",
        "UMS_JOB_STALE_SECONDS": "20",
    }

    def start_job(title: str) -> Job:
        with transaction.atomic():
            job = jobs.enqueue("test.sleep", actor=None, title=title, params={"seconds": 600})
        wait_for(
            lambda: Job.objects.filter(pk=job.pk, status=Job.RUNNING).exists(),
            timeout=60,
            what="the job to start",
        )
        time.sleep(1)
        return job

    def seconds_to_resume(job: Job, killed_at: float) -> float:
        wait_for(
            lambda: Job.objects.filter(pk=job.pk, status=Job.RUNNING, attempts__gte=2).exists(),
            timeout=120,
            interval=0.1,
            what="the job to run again",
        )
        elapsed = round(time.monotonic() - killed_at, 2)
        Job.objects.filter(pk=job.pk).update(status=Job.CANCELLED)
        return elapsed

    results = {}
    with tempfile.TemporaryDirectory() as tmp, celery_stack(Path(tmp), env=env) as (worker, _):
        # (a) Only the pool processes die (the OOM killer).
        job = start_job("bench pool")
        killed_at = time.monotonic()
        worker.kill_pool()
        results["pool_killed"] = seconds_to_resume(job, killed_at)
        # (b) The whole worker dies and is restarted at once (systemd Restart=always).
        job = start_job("bench worker")
        killed_at = time.monotonic()
        worker.kill()
        worker.start(wait=False)
        results["worker_killed_and_restarted"] = seconds_to_resume(job, killed_at)
        worker.wait_ready()
        # (c) A worker on another machine dies for good; this machine's worker takes over
        # once the heartbeat is stale (its pid means nothing here).
        worker.stop()
        remote = make_worker(Path(tmp), worker_environment(env), name="remote", host="elsewhere")
        remote.start()
        try:
            job = start_job("bench remote")
            assert Job.objects.get(pk=job.pk).owner.startswith("elsewhere:")
            worker.start()
            killed_at = time.monotonic()
            remote.kill()
            results["remote_worker_lost"] = seconds_to_resume(job, killed_at)
        finally:
            remote.kill()
    return {"seconds_to_resume": results}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = database_url()
    setup(url)
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": os.getloadavg(),
    }
    report["seed"] = seed(args.intents)
    report["pass"] = bench_pass(args.passes)
    report["pass"]["target_ms"] = PASS_TARGET_MS
    plans = explain_queries()
    for name, plan in plans.items():
        print(f"--- {name}\n{plan}")
    report["plans"] = plans
    if not args.skip_worker:
        report["resume"] = bench_resume()
        report["resume"]["target_s"] = RESUME_TARGET_S
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "plans"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
