"""Benchmark of issue 19 (writes under concurrency) over HTTP: mailbox creates through the
JSON API, served by gunicorn with the production settings, by 1 and by N clients.

``concurrent_writes.py`` measures the same figure at the action layer (N Django processes
calling ``mail.actions.create_mailbox``); administrators get it through the API, so here
gunicorn is started as ``throughput.py`` starts it (``--workers 4 --threads 4``, the
README's and the compose stack's settings) and each client holds one keep-alive
connection (``http.client``) POSTing ``/api/v1/mail/mailboxes/`` (``{"domain", "localPart",
"password"}``) with an API token of the root administrator, as fast as it can: a token of
its own, as 16 administrators would have (``--shared-token``: one for all, whose "last
used" update, at most once a minute, then serialises on one row). Every answer is
checked (201, and the JSON names the mailbox asked for); any other answer fails the run.
First one client alone, then N at once (default 16), each in a domain of its own customer,
all customers children of the root (as ``concurrent_writes.py``), ``--seconds`` each.

Targets (issue 19): N clients' throughput at least 1.7 times one client's, lock waits
p95 at most 5 ms::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_writes \\
        .venv/bin/python benchmarks/concurrent_writes_http.py [--clients 16] [--seconds 10]

Jobs: gunicorn runs with ``UMS_TASKS_IN_PROCESS=false``, as in production (README: ``true``
runs each job inside the request that enqueued it, for the test suite only). Jobs then go
to the Celery broker when ``CELERY_BROKER_URL`` is set (the compose stack), else to the
embedded runner (a NOTIFY after commit); either way the request never runs node work.
(The bench database has no nodes, so a create queues no job anyway.) The cache is Redis
when ``REDIS_URL`` is set, as in the compose stack, else each worker's local memory.
Password hashing uses the test suite's cheap Argon2 settings, as ``concurrent_writes.py``
does, so the figures are about the write path and its locks; ``--production-hash`` keeps
the product's defaults (2 passes over 100 MiB per create).

Per phase: creates/s, latency p50/p95, lock waits (``concurrent_writes.LockSampler``, a
sampler of ``pg_locks`` inside PostgreSQL), CPU per create of the gunicorn workers,
PostgreSQL, the clients and the whole machine, and the cores' idle share. The clients are
threads of this process by default (``--client-mode processes`` forks one process each):
their CPU per create is measured either way, see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import multiprocessing
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Production's job mode for the web processes (inherited by gunicorn, see the docstring);
# mail.setup_django would otherwise default it to true for this process and its children.
os.environ["UMS_TASKS_IN_PROCESS"] = "false"

from benchmarks import concurrent_writes, cpu_account, mail, throughput  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "concurrent_writes_http.json"
PROBE = REPO_ROOT / "benchmarks" / "gunicorn_probe.py"
CREATE_PATH = "/api/v1/mail/mailboxes/"
PASSWORD = "Amber-Quarry-Willow-88"
CHEAP_HASH_SETTINGS = ("UMS_ARGON2_TIME_COST", "UMS_ARGON2_MEMORY_KIB", "UMS_ARGON2_PARALLELISM")
# Forked client processes start at once (nothing to import again); they use no Django.
FORK = multiprocessing.get_context("fork")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="untimed creates per client before the start (so each customer holds escrow: "
        "the figures are then the steady state, not the phase's first refills)",
    )
    parser.add_argument(
        "--client-mode",
        choices=["threads", "processes"],
        default="threads",
        help="clients as threads of this process or as forked processes",
    )
    parser.add_argument(
        "--shared-token",
        action="store_true",
        help="one API token for every client (default: a token each)",
    )
    parser.add_argument(
        "--production-hash",
        action="store_true",
        help="the product's Argon2 cost, not the test suite's cheap one",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--clients and --seconds must be positive, --warmup not negative")
    # throughput.start_gunicorn's extra arguments: the probe that tells warm threads.
    args.gunicorn_arg = ["-c", str(PROBE)]
    return args


class CreateFailed(RuntimeError):
    pass


def create_mailbox(
    conn: http.client.HTTPConnection, headers: dict[str, str], domain_id: int, local: str
) -> None:
    """One POST on the kept connection; anything but the 201 of this mailbox raises."""
    body = json.dumps({"domain": domain_id, "localPart": local, "password": PASSWORD})
    conn.request("POST", CREATE_PATH, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 201:
        raise CreateFailed(f"{local}: HTTP {response.status} {data[:300]!r}")
    answer = json.loads(data)
    if (
        answer.get("localPart") != local
        or answer.get("domain") != domain_id
        or not str(answer.get("email", "")).startswith(f"{local}@")
        or not isinstance(answer.get("id"), int)
    ):
        raise CreateFailed(f"{local}: unexpected answer {data[:300]!r}")


def client(index: int, plan: dict[str, Any], events: Any, go: Any, window: Any) -> None:
    """One client: warm-up creates, "ready", wait for the common start, then creates
    until the common stop; the latencies and this thread's CPU time go to ``events``."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", plan["port"], timeout=120)
        headers = {
            "Authorization": f"Bearer {plan['tokens'][index]}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        domain_id, prefix = plan["domains"][index], f"{plan['stamp']}c{index}"
        for n in range(plan["warmup"]):
            create_mailbox(conn, headers, domain_id, f"{prefix}w{n}")
        events.put(("ready", index, None))
        go.wait()
        start_at, stop_at = window[0], window[1]
        time.sleep(max(0.0, start_at - time.time()))
        latencies: list[float] = []
        cpu_started = time.thread_time()  # this client alone, in either mode
        while time.time() < stop_at:
            started = time.perf_counter()
            create_mailbox(conn, headers, domain_id, f"{prefix}n{len(latencies)}")
            latencies.append((time.perf_counter() - started) * 1000)
        cpu = time.thread_time() - cpu_started
        conn.close()
        events.put(("done", index, {"latencies_ms": latencies, "cpu_s": cpu}))
    except Exception as exc:  # every failure fails the run, with what the server said
        events.put(("error", index, f"{type(exc).__name__}: {exc}"))


def warm_server(
    port: int, token: str, domain_id: int, args: argparse.Namespace, var_dir: str
) -> int:
    """Every worker thread past its first request (the URL configuration's import, its
    database connection, the create path's serializer) before anything is timed: rounds
    of concurrent new connections, each a mailbox list page and a create refused for its
    missing password (400, nothing written), until each thread has marked that it served
    (``gunicorn_probe.py``). Returns how many threads did (all but on a very busy machine)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"domain": domain_id, "localPart": "warm"})
    served, wanted = Path(var_dir) / "served", args.workers * args.threads
    failures: list[str] = []

    def warm() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for method, path, payload, expected in (
            ("GET", f"{CREATE_PATH}?pageSize=1", None, 200),
            ("POST", CREATE_PATH, body, 400),
        ):
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != expected:
                failures.append(f"{method} {path}: {response.status} {data[:200]!r}")
        conn.close()

    for _round in range(60):
        threads = [threading.Thread(target=warm) for _ in range(2 * wanted)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise CreateFailed(f"warming the server: {failures[0]}")
        if served.is_dir() and len(list(served.iterdir())) >= wanted:
            break
    return len(list(served.iterdir())) if served.is_dir() else 0


def booted_workers(master: int, workers: int) -> list[int]:
    """gunicorn's worker pids once all are forked (the port answers before they are)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = throughput.server_pids(master)["gunicorn"]
        if len(pids) >= workers:
            return pids
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn started {len(pids)} of {workers} workers")


def _next_event(events: Any, deadline: float) -> tuple[str, int, Any]:
    try:
        kind, index, payload = events.get(timeout=max(0.1, deadline - time.monotonic()))
    except queue.Empty:
        raise RuntimeError("a client stopped answering") from None
    if kind == "error":
        raise CreateFailed(f"client {index}: {payload}")
    return kind, index, payload


def start_clients(args: argparse.Namespace, plan: dict[str, Any]) -> tuple[list[Any], Any, Any]:
    """The clients of one phase, threads or forked processes, sharing one event queue."""
    count = len(plan["domains"])
    if args.client_mode == "processes":
        events, go, window = FORK.Queue(), FORK.Event(), FORK.Array("d", 2)
        workers = [
            FORK.Process(target=client, args=(i, plan, events, go, window), daemon=True)
            for i in range(count)
        ]
    else:
        events, go, window = queue.Queue(), threading.Event(), [0.0, 0.0]
        workers = [
            threading.Thread(target=client, args=(i, plan, events, go, window), daemon=True)
            for i in range(count)
        ]
    for worker in workers:
        worker.start()
    return workers, events, (go, window)


def run_phase(
    args: argparse.Namespace, plan: dict[str, Any], dsn: str, gunicorn_pids: list[int]
) -> dict[str, Any]:
    from django.db import connection

    # The gunicorn threads' own connections (persistent); refills' connections of one
    # statement come and go and are only in the machine-wide PostgreSQL figure.
    processes = {"gunicorn": gunicorn_pids, "backends": database_backends()}
    connection.close()  # nothing of this process's own may hold a lock meanwhile
    workers, events, (go, window) = start_clients(args, plan)
    count = len(workers)
    deadline = time.monotonic() + 120 + args.warmup * 5
    for _ in range(count):
        _next_event(events, deadline)  # "ready", or the first client's failure
    start_at = time.time() + 0.5
    stop_at = start_at + args.seconds
    window[0], window[1] = start_at, stop_at
    sampler = concurrent_writes.LockSampler(dsn, stop_at)
    go.set()
    time.sleep(max(0.0, start_at - time.time()))
    sampler.start()
    cpu_start = cpu_account.read()
    started = {name: sum(throughput.cpu_seconds(pids)) for name, pids in processes.items()}
    time.sleep(max(0.0, stop_at - time.time()))
    cpu_end = cpu_account.read()  # requests still running at the stop are not counted
    spent = {n: sum(throughput.cpu_seconds(p)) - started[n] for n, p in processes.items()}
    if not all(Path(f"/proc/{pid}").exists() for pid in gunicorn_pids):
        # Its CPU is lost from the sum and its replacement starts cold: no figure holds.
        raise CreateFailed("a gunicorn worker exited during the phase")
    deadline = time.monotonic() + 180
    reports = [_next_event(events, deadline)[2] for _ in range(count)]
    for worker in workers:
        worker.join(timeout=30)
    sampler.join()
    latencies = [ms for report in reports for ms in report["latencies_ms"]]
    creates = max(len(latencies), 1)
    client_cpu = sum(report["cpu_s"] for report in reports)
    path_cpu_ms = (spent["gunicorn"] + spent["backends"] + client_cpu) * 1000 / creates
    return {
        "clients": count,
        **concurrent_writes.phase_figures(latencies, sampler, args.seconds),
        "gunicorn_cpu_ms_per_create": round(spent["gunicorn"] * 1000 / creates, 2),
        # Their database backends alone: the machine-wide PostgreSQL figure below also
        # counts whatever else PostgreSQL serves on this machine.
        "backend_cpu_ms_per_create": round(spent["backends"] * 1000 / creates, 2),
        # The load generator's own CPU (requests, JSON, checks): it shares the two cores.
        "client_cpu_ms_per_create": round(client_cpu * 1000 / creates, 3),
        # What the cores could create if nothing else ran on them (as throughput.py's
        # cpu_bound_requests_per_s): the figure other load on the machine moves least.
        "cpu_bound_creates_per_s": round((os.cpu_count() or 1) * 1000 / max(path_cpu_ms, 1e-3), 1),
        # The whole machine and PostgreSQL (the lock sampler's polling included).
        **cpu_account.per_operation(cpu_start, cpu_end, len(latencies)),
        "load_average": os.getloadavg()[0],
    }


def server_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the web processes run with, recorded next to the figures."""
    from django.conf import settings

    return {
        "workers": args.workers,
        "threads": args.threads,
        "task_mode": settings.UMS_TASK_MODE,
        "cache": "redis" if os.environ.get("REDIS_URL") else "local memory",
        "argon2": {
            "time_cost": settings.ARGON2_TIME_COST,
            "memory_kib": settings.ARGON2_MEMORY_KIB,
            "parallelism": settings.ARGON2_PARALLELISM,
        },
        "client_mode": args.client_mode,
        "tokens": "one shared" if args.shared_token else "one per client",
    }


def measure(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """gunicorn started and warmed, then the two phases; gunicorn stopped either way."""
    people = mail.ensure_people()

    domain_ids = concurrent_writes.domains_under_root(args.clients)
    tokens = client_tokens(people["root"], args)
    plan = {"tokens": tokens, "warmup": args.warmup}
    # Before gunicorn: another benchmark's creates would share the domains and limit rows.
    others = len(database_backends())
    if others:  # another benchmark on this database writes in the same domains
        print(f"warning: {others} other sessions on this database", file=sys.stderr)
    stamp = f"hw{int(time.time())}"
    with tempfile.TemporaryDirectory(prefix="ums-bench-http-writes-") as var_dir:
        plan["port"] = throughput.free_port()
        proc = throughput.start_gunicorn(args, plan["port"], var_dir)
        try:
            pids = booted_workers(proc.pid, args.workers)
            warm = warm_server(plan["port"], tokens[0], domain_ids[0], args, var_dir)
            one = run_phase(
                args, {**plan, "domains": domain_ids[:1], "stamp": f"{stamp}a"}, url, pids
            )
            many = run_phase(args, {**plan, "domains": domain_ids, "stamp": f"{stamp}b"}, url, pids)
        except CreateFailed as exc:
            # The warm-up's refused creates log a line each; what is left is news.
            lines = (Path(var_dir) / "gunicorn.log").read_text().splitlines()
            log = "\n".join([line for line in lines if not line.startswith("Bad Request")][-30:])
            raise CreateFailed(f"{exc}\n--- end of gunicorn's log ---\n{log}") from None
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    server = {**server_settings(args), "threads_warmed": warm, "other_sessions_at_start": others}
    return {"server": server, "one": one, "many": many}


def client_tokens(root: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """An API token of the root administrator per client (``mail.ensure_people``'s for
    all with ``--shared-token``)."""
    if args.shared_token:
        return [root["token"]] * args.clients
    from tenants import actions as tenant_actions

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return [
        tenant_actions.create_token(actor=root["admin"], name=f"bench http writes {stamp} {i}")[1]
        for i in range(args.clients)
    ]


def database_backends() -> list[int]:
    """The client backends of this database besides this process's own."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return [row[0] for row in cursor.fetchall()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.production_hash:
        for name in CHEAP_HASH_SETTINGS:  # set by concurrent_writes' import, or by the caller
            os.environ.pop(name, None)
    url = mail.database_url()
    if mail.seeded_sizes(url) is None:
        raise SystemExit("seed the mail benchmark's database first (benchmarks/mail.py)")
    mail.setup_django()
    try:
        measured = measure(args, url)
    except CreateFailed as exc:
        print(f"the run failed: {exc}", file=sys.stderr)
        return 2
    one, many, server = measured["one"], measured["many"], measured["server"]
    for label, phase in (("1 client", one), (f"{args.clients} clients", many)):
        concurrent_writes.print_phase(
            label,
            phase,
            f"CPU ms per create: gunicorn {phase['gunicorn_cpu_ms_per_create']:.1f} + its "
            f"backends {phase['backend_cpu_ms_per_create']:.1f} (all PostgreSQL "
            f"{phase['postgres_cpu_ms_per_op']:.1f}), clients "
            f"{phase['client_cpu_ms_per_create']:.2f}, machine "
            f"{phase['machine_cpu_ms_per_op']:.1f}; cores idle {phase['idle_share']:.0%}; "
            f"CPU-bound capacity {phase['cpu_bound_creates_per_s']:.0f} creates/s",
        )
    speedup, passed = concurrent_writes.verdict(one, many)
    print(
        "gunicorn {workers}x{threads}, jobs {task_mode}, cache {cache}, clients as "
        "{client_mode}, API tokens {tokens}; {threads_warmed} worker threads warm before the "
        "start".format(**server)
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "issue": 19,
                "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "cpus": os.cpu_count(),
                "seconds_per_phase": args.seconds,
                "warmup_creates_per_client": args.warmup,
                "server": server,
                "one_client": one,
                "many_clients": many,
                "speedup": round(speedup, 2),
                "passed": passed,
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
