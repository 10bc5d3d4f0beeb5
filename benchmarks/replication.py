"""Benchmark of issue 14: replication lag of a domain receiving mail at a steady rate.

Two real sshd nodes of the test harness (tests/harness: network and mount namespaces),
each with its own zfs-fuse daemon and pool (as the replication node tests build them). A
writer inside the primary node drops ``--rate`` (1,000) messages a minute into the
domain's dataset (Maildir files of ~8 KB, random so they do not compress away); the sync
loop runs what the ``replication.sync`` job runs for one replica, back to back:
:func:`replication.zfs.take_sync_snapshot` on the primary and
:func:`replication.zfs.send_to_replica` (the controller relays ``zfs send -I`` from one
SSH channel into ``zfs receive -F`` on the other), then prunes the sync snapshots.

Measured for ``--seconds`` (120): the duration of each sync pass, and the replication
lag sampled every 0.5 s (now minus the time of the newest snapshot the replica holds
completely: what a failover would lose at that instant). Reported: p50/p95/max of both,
and the messages written versus the messages the replica holds at the end.

The failover time (primary offline to mail deliverable and readable on the replica) is
not measured here: it needs Postfix and Courier; tests/replication/test_replication_node.py
logs the failover job's duration.

Usage::

    .venv/bin/python benchmarks/replication.py [--rate 1000] [--seconds 120]

Needs root and zfs-fuse (as the node tests do). No database.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ums.settings")

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "replication.json"
DOMAIN = "bench-repl.example"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="messages per minute")
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import django

    django.setup()
    from deploy.connector.keys import public_key_openssh
    from deploy.connector.ssh import SSHConnector
    from replication import zfs
    from tests.converge.fleet import ZFS_PRIVATE_PATHS, _start_zfs, _stop_zfs, in_node
    from tests.harness.sshnodes import NodeCluster
    from tests.servers.nodes import new_pkey

    pkey = new_pkey()
    workdir = Path(tempfile.mkdtemp(prefix="ums-bench-repl-"))
    cluster = NodeCluster(
        workdir, 2, public_key_openssh(pkey, "bench"), private_paths=ZFS_PRIVATE_PATHS
    )
    cluster.start()
    primary_node, replica_node = cluster.nodes
    pool = f"umsb{os.getpid() % 100000}"
    dataset = f"{pool}/mail/{DOMAIN}"
    result: dict = {"rate_per_minute": args.rate, "seconds": args.seconds}
    try:
        for tnode in cluster.nodes:
            (workdir / tnode.name).mkdir(exist_ok=True)  # one image file per node
            _start_zfs(tnode, workdir / tnode.name, pool)
        in_node(primary_node, ["zfs", "create", "-p", dataset])
        mount = in_node(primary_node, ["zfs", "get", "-H", "-o", "value", "mountpoint", dataset])
        folder = f"{mount.stdout.strip()}/alice/Maildir/new"
        in_node(primary_node, ["mkdir", "-p", folder])

        def conn(tnode) -> SSHConnector:
            c = SSHConnector(tnode.address, tnode.port, pkey=pkey, known_host_keys=[tnode.host_key])
            c.connect()
            return c

        primary, replica = conn(primary_node), conn(replica_node)
        # The writer: one shell loop inside the primary node (its own namespaces).
        pause = 60.0 / args.rate
        writer = subprocess.Popen(
            [
                "nsenter", "-t", str(primary_node.pid), "-m", "-u", "-n", "sh", "-c",
                f'i=0; while :; do i=$((i+1)); head -c 8192 /dev/urandom > "{folder}/m$i"; '
                f"sleep {pause:.4f}; done",
            ]
        )  # fmt: skip
        samples: list[float] = []
        passes: list[float] = []
        held_at: list[datetime.datetime] = []
        stop = threading.Event()

        def sampler() -> None:
            while not stop.is_set():
                if held_at:
                    now = datetime.datetime.now(datetime.UTC)
                    samples.append((now - held_at[-1]).total_seconds())
                time.sleep(0.5)

        thread = threading.Thread(target=sampler, daemon=True)
        started = time.monotonic()
        thread.start()
        while time.monotonic() - started < args.seconds:
            t0 = time.monotonic()
            now = datetime.datetime.now(datetime.UTC)
            name = zfs.take_sync_snapshot(primary, dataset, now)
            zfs.send_to_replica(primary, replica, dataset, name)
            zfs.prune_sync(primary, dataset, {name})
            passes.append(time.monotonic() - t0)
            held_at.append(now)
        stop.set()
        thread.join()
        writer.kill()
        writer.wait()
        written = in_node(primary_node, ["sh", "-c", f"ls {folder} | wc -l"]).stdout.strip()
        snap = held_at and zfs.sync_name(held_at[-1])
        result.update(
            passes=len(passes),
            pass_seconds={"p50": pct(passes, 0.5), "p95": pct(passes, 0.95), "max": pct(passes, 1)},
            lag_seconds={
                "p50": pct(samples, 0.5),
                "p95": pct(samples, 0.95),
                "max": pct(samples, 1),
            },
            mean_pass_seconds=round(statistics.mean(passes), 2),
            messages_written=int(written),
            last_snapshot=snap,
            load_average=os.getloadavg(),
        )
        primary.close()
        replica.close()
    finally:
        for tnode in cluster.nodes:
            _stop_zfs(tnode, pool)
        cluster.stop()
    print(json.dumps(result, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
