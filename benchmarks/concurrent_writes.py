"""Benchmark of issue 19 (writes under concurrency): mailbox creates by 1 and by N clients.

Uses the mail benchmark's database (1,000,000 mailboxes; ``benchmarks/mail.py`` seeds it,
and its ``ensure_people`` puts resource limits on the root and one reseller, so every
create takes the locked limit check). N worker processes (default 16) each create
mailboxes through ``mail.actions.create_mailbox`` (the action layer: permission and scope
checks, limit reservation, audit append, one transaction) in a domain of its own customer,
all customers children of the root. One client alone, then N at once, for the same
number of seconds each, alternated ``--rounds`` times (default 3: 1, N, 1, N, 1, N); the
speed-up is from the summed creates, so the drift of two shared cores hits both alike.
A sampler polls ``pg_locks`` every few milliseconds for waiting lock requests of this
database (``waitstart``, PostgreSQL 14+) and names the table behind each wait: its p95 is
a lower bound at the sampling resolution.

Targets (issue 19): N clients' throughput at least 1.7 times one client's; lock waits
p95 at most 5 ms. Password hashing uses the cheap Argon2 settings of the test suite
(``UMS_ARGON2_*``) so the figures are about the database, not the hash (the action hashes
before taking any lock).

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_perf_mail \\
        .venv/bin/python benchmarks/concurrent_writes.py [--clients 16] [--seconds 10]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

for _name, _value in (
    ("UMS_ARGON2_TIME_COST", "1"),
    ("UMS_ARGON2_MEMORY_KIB", "1024"),
    ("UMS_ARGON2_PARALLELISM", "1"),
):
    os.environ.setdefault(_name, _value)

from benchmarks import cpu_account, mail  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "concurrent_writes.json"
SPEEDUP_TARGET = 1.7
LOCK_WAIT_TARGET_MS = 5.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="phases alternate 1, N, 1, N, ... this many times; the figures are the sums, so "
        "the machine's drift (two shared cores) hits both alike",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="untimed creates per worker before the start (so each customer holds escrow: "
        "the figures are then the steady state, not the phase's first refills)",
    )
    parser.add_argument("--worker", nargs=3, metavar=("DOMAIN", "RENDEZVOUS_DIR", "WARMUP"))
    return parser.parse_args(argv)


def worker(domain_id: int, rendezvous: Path, warmup: int = 0) -> None:
    """Load Django, say ready, wait for the common start, then create mailboxes in one
    domain until the common stop; print one JSON line with the latencies."""
    mail.setup_django()
    from mail import actions
    from mail.models import Domain
    from tenants.models import Administrator
    from ums import context

    actor = Administrator.objects.get(username="bench.root")
    domain = Domain.objects.get(pk=domain_id)
    for n in range(warmup):  # before "ready": the sampler is not running yet
        with context.acting(channel=context.CHANNEL_CLI, actor=actor):
            actions.create_mailbox(
                actor=actor, domain=domain, local_part=f"cw{os.getpid()}x{time.time_ns()}w{n}",
                password="bench-Password-not-secret-1",
            )  # fmt: skip
    (rendezvous / f"ready-{os.getpid()}").touch()
    go = rendezvous / "go"
    while not go.exists():
        time.sleep(0.05)
    start_at, stop_at = json.loads(go.read_text())
    stamp = f"{os.getpid()}x{int(start_at)}"
    latencies: list[float] = []
    time.sleep(max(0.0, start_at - time.time()))
    cpu_started = time.process_time()
    i = 0
    while time.time() < stop_at:
        started = time.perf_counter()
        with context.acting(channel=context.CHANNEL_CLI, actor=actor):
            actions.create_mailbox(
                actor=actor, domain=domain, local_part=f"cw{stamp}n{i}",
                password="bench-Password-not-secret-1",
            )  # fmt: skip
        latencies.append((time.perf_counter() - started) * 1000)
        i += 1
    cpu = time.process_time() - cpu_started
    print(json.dumps({"domain": domain_id, "latencies_ms": latencies, "cpu_s": cpu}), flush=True)


def domains_under_root(count: int) -> list[int]:
    """One domain in each of ``count`` different children of the root customer."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON (k.id) d.id FROM tenants_customer k "
            "JOIN mail_domain d ON d.customer_id = k.id WHERE k.parent_id = 1 "
            "ORDER BY k.id, d.id LIMIT %s",
            [count],
        )
        found = [row[0] for row in cursor.fetchall()]
    if len(found) < count:
        raise SystemExit(f"only {len(found)} children of the root own a domain")
    return found


class LockSampler(threading.Thread):
    """Polls waiting lock requests of this database inside PostgreSQL; the longest wait
    seen per request.

    The polling loop runs server-side (one ``DO`` block until ``stop_at``, results in a
    temporary table), so nothing crosses the socket between polls: a Python loop doing the
    same cost about 8 % of a core, which the 16-client phase (cores saturated) paid out of
    the creates while the 1-client phase (a core idle) did not, biasing the ratio down.
    """

    def __init__(self, dsn: str, stop_at: float, interval: float = 0.003) -> None:
        super().__init__(daemon=True)
        self.dsn, self.stop_at, self.interval = dsn, stop_at, interval
        self.waits: dict[tuple[int, str], dict[str, Any]] = {}

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TEMP TABLE bench_waits (pid int, since timestamptz, ms float8, "
                "locktype text, relation text, query text, PRIMARY KEY (pid, since))"
            )
            conn.execute(
                _SAMPLER_SQL.replace("{STOP}", repr(float(self.stop_at))).replace(
                    "{INTERVAL}", repr(float(self.interval))
                )
            )
            rows = conn.execute(
                "SELECT pid, since::text, ms, locktype, relation, query FROM bench_waits"
            ).fetchall()
        for pid, since, waited, locktype, relation, query in rows:
            entry = {"ms": float(waited or 0), "locktype": locktype, "query": query or ""}
            if relation:
                entry["relation"] = relation
            self.waits[(pid, since)] = entry


# Every INTERVAL seconds until STOP (a Unix time): the waiting lock requests of this
# database, each request's longest wait so far kept. pg_stat_activity is read (with its
# per-transaction snapshot cleared) only when some request waits.
_SAMPLER_SQL = """
DO $$
BEGIN
    WHILE clock_timestamp() < to_timestamp({STOP}) LOOP
        IF EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted) THEN
            PERFORM pg_stat_clear_snapshot();
            INSERT INTO bench_waits AS w (pid, since, ms, locktype, relation, query)
            SELECT l.pid, l.waitstart,
                   extract(epoch FROM clock_timestamp() - l.waitstart) * 1000,
                   l.locktype, coalesce(l.relation::regclass::text, ''), left(a.query, 120)
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE NOT l.granted AND l.waitstart IS NOT NULL
            AND a.datname = current_database()
            ON CONFLICT (pid, since) DO UPDATE SET ms = greatest(w.ms, EXCLUDED.ms);
        END IF;
        PERFORM pg_sleep({INTERVAL});
    END LOOP;
END $$
"""


def _table_of(wait: dict[str, Any]) -> str:
    """The table a wait is about: the locked relation, else the statement's first table."""
    if wait.get("relation"):
        return str(wait["relation"])
    query = wait["query"].replace('"', "")
    first = query.split()[1] if query.startswith("SELECT ") and len(query.split()) > 1 else ""
    if "." in first:  # the ORM's SELECT "table"."column", ...: FROM is cut off at 120
        return first.split(".", 1)[0]
    for keyword in (" FROM ", "UPDATE ", "INSERT INTO "):
        if keyword in query:
            return query.split(keyword, 1)[1].split()[0] if query.split(keyword, 1)[1] else "?"
    return wait.get("locktype", "?")


def run_phase(args: argparse.Namespace, domain_ids: list[int], dsn: str) -> dict[str, Any]:
    rendezvous = Path(tempfile.mkdtemp(prefix="ums-bench-writes-"))
    env = {**os.environ}
    command = [sys.executable, __file__, "--worker"]
    procs = [
        subprocess.Popen(
            [*command, str(d), str(rendezvous), str(args.warmup)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for d in domain_ids
    ]
    while len(list(rendezvous.glob("ready-*"))) < len(procs):
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker died before the start")
        time.sleep(0.1)
    start_at = time.time() + 0.5
    stop_at = start_at + args.seconds
    (rendezvous / "go.tmp").write_text(json.dumps([start_at, stop_at]))
    (rendezvous / "go.tmp").rename(rendezvous / "go")
    sampler = LockSampler(dsn, stop_at)
    time.sleep(max(0.0, start_at - time.time()))
    sampler.start()
    cpu_start = cpu_account.read()
    time.sleep(max(0.0, stop_at - time.time()))
    cpu_end = cpu_account.read()  # the clients stop here; their exits are not counted
    outputs = [p.communicate(timeout=args.seconds + 120)[0] for p in procs]
    sampler.join()
    shutil.rmtree(rendezvous, ignore_errors=True)
    if any(p.returncode for p in procs):
        raise RuntimeError("a worker failed")
    reports = [json.loads(out.splitlines()[-1]) for out in outputs]
    latencies = [ms for report in reports for ms in report["latencies_ms"]]
    client_cpu = sum(report["cpu_s"] for report in reports)
    return {
        "clients": len(domain_ids),
        **phase_figures(latencies, sampler, args.seconds),
        # The clients' own CPU (Django + the action), the figure least moved by the load.
        "client_cpu_ms_per_create": round(client_cpu * 1000 / max(len(latencies), 1), 2),
        # The whole machine and PostgreSQL (the lock sampler's ~8 % of a core included).
        **cpu_account.per_operation(cpu_start, cpu_end, len(latencies)),
        "load_average": os.getloadavg()[0],
    }


def phase_figures(latencies: list[float], sampler: LockSampler, seconds: float) -> dict[str, Any]:
    """Throughput, latency and the sampler's lock waits (per statement and per table)."""
    waits = sorted(w["ms"] for w in sampler.waits.values())
    by_query: dict[str, int] = {}
    by_table: dict[str, list[float]] = {}
    for wait in sampler.waits.values():
        key = wait.get("relation") or wait["query"]
        by_query[key] = by_query.get(key, 0) + 1
        by_table.setdefault(_table_of(wait), []).append(wait["ms"])
    return {
        "creates": len(latencies),
        "creates_per_s": round(len(latencies) / seconds, 1),
        "latency_ms": mail.stats(latencies) if latencies else {},
        "lock_waits_seen": len(waits),
        "lock_wait_ms": mail.stats(waits) if waits else {},
        "lock_waits_ms_all": [round(ms, 2) for ms in waits],
        "lock_waits_by_statement": dict(sorted(by_query.items(), key=lambda kv: -kv[1])[:8]),
        "lock_wait_ms_by_table": {
            t: {**mail.stats(ms), "n": len(ms)} for t, ms in sorted(by_table.items())
        },
    }


def print_phase(label: str, phase: dict[str, Any], cpu_line: str) -> None:
    """Throughput, latency and lock waits of one phase; ``cpu_line`` says where CPU went."""
    latency = phase["latency_ms"]
    print(
        f"{label:11} {phase['creates_per_s']:7.1f} creates/s  latency p50 "
        f"{latency.get('p50', 0):6.1f} p95 {latency.get('p95', 0):6.1f} ms"
        f"  lock waits seen {phase['lock_waits_seen']:5d}, p95 "
        f"{phase['lock_wait_ms'].get('p95', 0):6.1f} ms  load {phase['load_average']:.1f}"
    )
    print(f"    {cpu_line}")
    for table, figures in phase["lock_wait_ms_by_table"].items():
        print(f"    {figures['n']} waits on {table}: p50 {figures['p50']} p95 {figures['p95']} ms")


def verdict(one: dict[str, Any], many: dict[str, Any]) -> tuple[float, bool]:
    """The speed-up of N clients over one and whether both targets of issue 19 are met
    (printed)."""
    speedup = many["creates_per_s"] / max(one["creates_per_s"], 0.001)
    lock_p95 = many["lock_wait_ms"].get("p95", 0.0)
    print(
        f"speedup {speedup:.2f} (target {SPEEDUP_TARGET}), lock wait p95 {lock_p95:.1f} ms "
        f"(target {LOCK_WAIT_TARGET_MS})"
    )
    return speedup, speedup >= SPEEDUP_TARGET and lock_p95 <= LOCK_WAIT_TARGET_MS


KINDS = ("one_client", "many_clients")


def _summed(phases: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """One kind of phase over every round: creates per second from the sums, lock waits
    (the verdict's p95) over all of them together."""
    creates = sum(p["creates"] for p in phases)
    waits = sorted(ms for p in phases for ms in p["lock_waits_ms_all"])
    return {
        "creates": creates,
        "creates_per_s": round(creates / (seconds * len(phases)), 1),
        "lock_waits_seen": len(waits),
        "lock_wait_ms": mail.stats(waits) if waits else {},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(int(args.worker[0]), Path(args.worker[1]), int(args.worker[2]))
        return 0
    url = mail.database_url()
    if mail.seeded_sizes(url) is None:
        raise SystemExit("seed the mail benchmark's database first (benchmarks/mail.py)")
    mail.setup_django()
    mail.ensure_people()
    from django.db import connection

    domain_ids = domains_under_root(args.clients)
    connection.close()
    rounds = []
    for number in range(1, args.rounds + 1):
        one = run_phase(args, domain_ids[:1], url)
        many = run_phase(args, domain_ids, url)
        for label, phase in (("1 client", one), (f"{args.clients} clients", many)):
            print_phase(
                f"{label} (round {number})",
                phase,
                f"CPU ms per create: clients {phase['client_cpu_ms_per_create']:.1f}, "
                f"PostgreSQL {phase['postgres_cpu_ms_per_op']:.1f}, machine "
                f"{phase['machine_cpu_ms_per_op']:.1f}; cores idle {phase['idle_share']:.0%}",
            )
        ratio = many["creates_per_s"] / max(one["creates_per_s"], 0.001)
        print(f"    round {number}: speed-up {ratio:.2f}")
        rounds.append({"one_client": one, "many_clients": many, "speedup": round(ratio, 2)})
    one, many = (_summed([r[kind] for r in rounds], args.seconds) for kind in KINDS)
    print(
        f"all {args.rounds} rounds: 1 client {one['creates_per_s']:.1f} creates/s, "
        f"{args.clients} clients {many['creates_per_s']:.1f}; lock waits seen "
        f"{one['lock_waits_seen']} / {many['lock_waits_seen']}"
    )
    speedup, passed = verdict(one, many)
    report = {
        "issue": 19,
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "seconds_per_phase": args.seconds,
        "rounds": rounds,
        "one_client": one,
        "many_clients": many,
        "speedup": round(speedup, 2),
        "passed": passed,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
