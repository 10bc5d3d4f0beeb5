"""Benchmark of issue 14: failover time, from "primary offline" (its node's namespace
stopped: sshd and every daemon) to "mail deliverable and readable again" (a message sent
through the SMTP node right after the kill reads back over IMAPS on the new primary).
Target: under 60 s on this machine.

Two runs on real harness nodes (two IMAP nodes with zfs-fuse, one SMTP node; Postfix and
Courier), the scenario in ``tests/replication/bench_failover.py`` (run through pytest for
its node fixtures; it asserts nothing about time):

* **automatic**: the liveness probe of automatic-failover primaries every
  ``--probe-interval`` s (what detects the death), the metric sweep every
  ``--metrics-interval`` s, the replication scheduler every ``--check-interval`` s, a
  policy of automatic failover after ``--delay`` s; each unset: the product's default
  (10 s, 60 s, 60 s and the policy's 30 s);
* **manual**: the administrator clicks *Fail over* as soon as the primary is down.

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_failover \\
    REDIS_URL=redis://127.0.0.1:6379/1 CELERY_BROKER_URL=redis://127.0.0.1:6379/3 \\
    .venv/bin/python benchmarks/failover.py \\
        [--probe-interval 10] [--metrics-interval 60] [--check-interval 60] [--delay 30] \\
        [--rounds 3]

Needs root, zfs-fuse, Postfix and Courier (as the node tests).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "failover.json"
SCENARIO = "tests/replication/bench_failover.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe-interval", type=float, default=None)
    parser.add_argument("--metrics-interval", type=float, default=None)
    parser.add_argument("--check-interval", type=float, default=None)
    parser.add_argument("--delay", type=int, default=None, help="policy failover delay (s)")
    parser.add_argument("--rounds", type=int, default=2, help="automatic + manual each")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def _opt(value: float | None) -> str:
    return "" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ums-bench-failover-") as tmp:
        out = Path(tmp) / "result.json"
        env = {
            **os.environ,
            "UMS_TASKS_IN_PROCESS": "true",
            "UMS_BENCH_JSON": str(out),
            # Empty: the product's default.
            "UMS_BENCH_PROBE_INTERVAL": _opt(args.probe_interval),
            "UMS_BENCH_METRICS_INTERVAL": _opt(args.metrics_interval),
            "UMS_BENCH_CHECK_INTERVAL": _opt(args.check_interval),
            "UMS_BENCH_FAILOVER_DELAY": _opt(args.delay),
            "UMS_BENCH_ROUNDS": str(args.rounds),
        }
        command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", SCENARIO]
        proc = subprocess.run(command, cwd=REPO_ROOT, env=env, check=False)
        if proc.returncode != 0 or not out.exists():
            print(f"the failover scenario failed (exit {proc.returncode})", file=sys.stderr)
            return proc.returncode or 1
        result = json.loads(out.read_text())
    cli = " ".join(sys.argv[1:] if argv is None else argv)
    result["command"] = f".venv/bin/python benchmarks/failover.py {cli}".strip()
    print(json.dumps(result, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
