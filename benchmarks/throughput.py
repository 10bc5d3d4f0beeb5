"""Benchmark of issue 19 (HTTP throughput of the API's read path) under gunicorn, with wrk.

Uses the mail benchmark's database (1,000,000 mailboxes, seeded by ``benchmarks/mail.py``'s
``seed`` when missing), starts gunicorn with the production settings the README and the
compose file use (``--workers 4 --threads 4``; ``--workers``/``--threads`` change them),
and drives it with ``wrk`` (Debian package ``wrk``): 16 connections on 4 threads (``-t4 -c16``) for
``--duration`` seconds, each request the root administrator's first page of mailboxes
with a real API token (target: 500 requests/s). Every answer is checked first (status 200
and a full page), so an error page cannot pass for speed. ``--profile`` records the
workers with py-spy (``pip install py-spy``) during one more wrk run and writes their
collapsed stacks next to the JSON, the busiest frames into it.

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_perf_mail \\
        .venv/bin/python benchmarks/throughput.py [--profile]

Everything shares the machine's cores (wrk, gunicorn, PostgreSQL): the load average is
recorded next to the figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import mail  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "throughput.json"
TARGET_RPS = 500.0
PAGE_PATH = "/api/v1/mail/mailboxes/?pageSize=50"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=4)
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=2, help="wrk runs (the best and all)")
    parser.add_argument("--path", default=PAGE_PATH)
    parser.add_argument(
        "--gunicorn-arg", action="append", default=[], metavar="ARG",
        help="more gunicorn arguments, e.g. --gunicorn-arg=--access-logfile=-",
    )  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="py-spy profile of the workers")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(args: argparse.Namespace, port: int, var_dir: str) -> subprocess.Popen:
    from django.conf import settings

    env = {k: v for k, v in os.environ.items() if k != "UMS_DEBUG"}
    env.update(
        UMS_VAR_DIR=var_dir,
        DJANGO_SECRET_KEY=settings.SECRET_KEY,
        UMS_ENCRYPTION_KEYS=",".join(settings.ENCRYPTION_KEYS),
        UMS_BASE_URL=f"http://127.0.0.1:{port}",
    )
    command = [
        sys.executable, "-m", "gunicorn", "ums.wsgi", "--bind", f"127.0.0.1:{port}",
        "--workers", str(args.workers), "--threads", str(args.threads), "--no-control-socket",
        *args.gunicorn_arg,
    ]  # fmt: skip
    log = open(Path(var_dir) / "gunicorn.log", "w")  # noqa: SIM115 (kept for the process)
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("gunicorn did not start: " + (Path(var_dir) / "gunicorn.log").read_text())


def check_page(url: str, token: str) -> int:
    """One request by hand: 200 and a full page, else the figures would mean nothing."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
        body = json.loads(response.read())
        if response.status != 200 or len(body.get("results", [])) != 50:
            raise RuntimeError(f"{url}: {response.status} {str(body)[:300]}")
        return len(body["results"])


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """User and system CPU time of these processes (``/proc/<pid>/stat``)."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / TICKS, system / TICKS


def server_pids(master: int) -> dict[str, list[int]]:
    """gunicorn's workers and the PostgreSQL backends of this database (same machine)."""
    from django.db import connection

    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        backends = [row[0] for row in cursor.fetchall()]
    return {"gunicorn": [int(p) for p in children], "postgres": backends}


def wrk(url: str, token: str, args: argparse.Namespace, master: int) -> dict[str, Any]:
    """One wrk run; with the CPU time gunicorn's workers and their database backends
    spent per request (less sensitive to other load on the machine than requests/s)."""
    pids = server_pids(master)
    before = {name: cpu_seconds(p) for name, p in pids.items()}
    command = [
        "wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
        "-H", f"Authorization: Bearer {token}", url,
    ]  # fmt: skip
    # wrk's own CPU (from its rusage) shows whether the load generator, which shares the
    # two cores, could be what limits the figure.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out}")
    spent = {
        name: tuple(a - b for a, b in zip(cpu_seconds(p), before[name], strict=True))
        for name, p in pids.items()
    }
    spent["wrk"] = (usage.ru_utime, usage.ru_stime)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    served = int(re.search(r"(\d+) requests in", out).group(1))
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    per_request = {
        name: {
            "user": round(user * 1000 / max(served, 1), 3),
            "system": round(system * 1000 / max(served, 1), 3),
        }
        for name, (user, system) in spent.items()
    }
    total_ms = sum(v["user"] + v["system"] for v in per_request.values())
    return {
        "requests_per_s": rps,
        "latency": latency,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "cpu_ms_per_request": per_request,
        # What the two cores could serve if nothing else ran on them: every process of
        # the request's path (load generator included) over the CPU time it needs.
        "cpu_bound_requests_per_s": round((os.cpu_count() or 1) * 1000 / total_ms, 1),
        "load_average": os.getloadavg()[0],
        "output": out,
    }


def profile(url: str, token: str, args: argparse.Namespace, pid: int, out: Path) -> dict[str, Any]:
    """py-spy over every worker during one wrk run: collapsed stacks in ``out`` and the
    share of samples (inclusive) of the frames that matter most."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    recorder = subprocess.Popen(
        # --gil: only the thread holding the GIL is sampled, so a thread waiting for the
        # database or for the GIL itself does not pass for work.
        [spy, "record", "--pid", str(pid), "--subprocesses", "--gil", "--rate", "250", "--format",
         "raw", "--duration", str(args.duration), "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1)
    wrk(url, token, args, pid)
    recorder.wait(timeout=args.duration + 60)
    return top_frames(out)


def top_frames(collapsed: Path, limit: int = 40) -> dict[str, Any]:
    """Inclusive share of samples per frame (``function (file)``), busy samples only."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or "select" in stack.rsplit(";", 1)[-1]:
            continue  # idle: a worker waiting for a request
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            name = re.sub(r":\d+\)$", ")", frame)
            inclusive[name] = inclusive.get(name, 0) + n
    ranked = sorted(inclusive.items(), key=lambda kv: -kv[1])[:limit]
    return {"busy_samples": total, "inclusive": {k: round(v / total, 3) for k, v in ranked}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    url = mail.database_url()
    seed_args = mail.parse_args([])
    wanted = {"customers": seed_args.customers, "domains": seed_args.domains,
              "mailboxes": seed_args.mailboxes, "seed": seed_args.seed}  # fmt: skip
    if mail.seeded_sizes(url) != wanted:
        print(f"seeding {wanted}", flush=True)
        mail.recreate_database(url)
        mail.setup_django()
        mail.seed(seed_args)
    else:
        mail.setup_django()
    people = mail.ensure_people()
    token = people["root"]["token"]
    port = free_port()
    page_url = f"http://127.0.0.1:{port}{args.path}"
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ums-bench-http-") as var_dir:
        proc = start_gunicorn(args, port, var_dir)
        try:
            for _ in range(20):  # every worker warm (imports, connections)
                check_page(page_url, token)
            runs = [wrk(page_url, token, args, proc.pid) for _ in range(args.runs)]
            if args.profile:
                stacks = args.json.with_suffix(".stacks.txt")
                results["profile"] = profile(page_url, token, args, proc.pid, stacks)
                results["profile"]["stacks"] = str(stacks)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    best = max(r["requests_per_s"] for r in runs)
    for run in runs:
        print(run["output"])
        print(f"CPU ms per request: {run['cpu_ms_per_request']}")
        print(f"CPU-bound capacity of the cores: {run['cpu_bound_requests_per_s']} req/s")
    print(
        f"{args.path}: best {best:.0f} req/s over {args.runs} runs of {args.duration} s, "
        f"{args.connections} connections, gunicorn {args.workers}x{args.threads} "
        f"{' '.join(args.gunicorn_arg)} "
        f"(target {TARGET_RPS:.0f}); load average {os.getloadavg()[0]:.2f}"
    )
    results.update(
        issue=19,
        when=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        cpus=os.cpu_count(),
        gunicorn={"workers": args.workers, "threads": args.threads, "more": args.gunicorn_arg},
        connections=args.connections,
        path=args.path,
        runs=[{k: v for k, v in r.items() if k != "output"} for r in runs],
        best_requests_per_s=best,
        target_requests_per_s=TARGET_RPS,
        passed=best >= TARGET_RPS and all(r["non_2xx"] == 0 for r in runs),
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
