"""Benchmark of issue 13 (off-node copies): snapshot and send of a domain of 10,000 messages.

Two real sshd nodes in their own namespaces (tests/harness), each with its own zfs-fuse
and pool: an IMAP node holding ``<pool>/mail/bench.example`` with ``--messages`` Maildir
files (``--mailboxes`` mailboxes, 2-8 KB each, random text so compression has real work),
and a backup node. Measured through the production code (``backup.offnode``) over SSH,
the controller relaying every byte between the two nodes:

1. ``zfs snapshot`` of the dataset;
2. the first copy: a full ``zfs send`` relayed into ``zfs receive -F`` on the backup node;
3. 1 % new mail (``--new`` messages), a snapshot, and the incremental pass
   (``copy_to_node``: list both sides, find the common snapshot, ``send -I``, prune);
4. a pass with nothing new (what every scheduled pass costs when idle);
5. the same full and incremental streams to a target as encrypted objects with the
   manifest (a local folder standing in for an NFS mount);
6. a full Maildir archive copy of the newest snapshot to that target (read through a
   read-only clone, ``Trash`` left out by exclusion, ``backup.offnode_archive``);
7. 1 % more new mail, a snapshot, and the Maildir archive increment of it
   (``backup.archive_chain``: only the new messages, plus the index of the tree).

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_offnode \\
    .venv/bin/python benchmarks/offnode.py

Needs root (namespaces) and zfs-fuse. No database access (Django is set up for imports).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import bootstrap  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "offnode.json"
DOMAIN = "bench.example"
# Writes N messages of random words into Maildir/cur of M mailboxes, inside the node.
POPULATE = r"""
import os, random, sys
root, count, boxes, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
words = [''.join(random.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(random.randint(2, 9)))
         for _ in range(3000)]
for i in range(start, start + count):
    box = f"{root}/user{i % boxes}/Maildir/cur"
    os.makedirs(box, exist_ok=True)
    size = random.randint(2000, 8000)
    body = []
    n = 0
    while n < size:
        w = random.choice(words); body.append(w); n += len(w) + 1
    with open(f"{box}/{1700000000 + i}.M{i}P1.bench:2,S", "w") as fh:
        fh.write(f"From: a{i}@example.org\nTo: user{i % boxes}@{sys.argv[5]}\n"
                 f"Subject: message {i}\n\n" + ' '.join(body) + "\n")
"""


def _timed(func: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = func(*args, **kwargs)
    return time.perf_counter() - started, result


def run(messages: int, mailboxes: int, new: int) -> dict[str, Any]:
    from backup import archive_chain, offnode, offnode_archive
    from backup import offnode_zfs as oz
    from backup.drivers.nfs import NfsTarget
    from backup.exclusions import Exclusions
    from deploy.connector.keys import public_key_openssh
    from deploy.connector.ssh import SSHConnector
    from tests.converge.fleet import ZFS_PRIVATE_PATHS, _start_zfs, _stop_zfs, in_node
    from tests.harness.sshnodes import NodeCluster
    from tests.servers.nodes import new_pkey

    pkey = new_pkey()
    base = Path(tempfile.mkdtemp(prefix="ums-bench-offnode-"))
    cluster = NodeCluster(
        base, 2, public_key_openssh(pkey, "bench"), private_paths=ZFS_PRIVATE_PATHS
    )
    cluster.start()
    pools = {0: f"umsbench{int(time.time()) % 100000}a", 1: f"umsbench{int(time.time()) % 100000}b"}
    started_pools: list[int] = []
    try:
        for index, pool in pools.items():
            _start_zfs(cluster.nodes[index], base, pool)
            started_pools.append(index)
        imap, backup = cluster.nodes
        pool, backup_pool = pools[0], pools[1]
        dataset = f"{pool}/mail/{DOMAIN}"
        mount = f"/var/lib/zfs/{pool}/mail/{DOMAIN}"
        in_node(imap, ["zfs", "create", "-p", dataset])
        t_populate, _ = _timed(
            in_node,
            imap,
            ["python3", "-c", POPULATE, mount, str(messages), str(mailboxes), "0", DOMAIN],
            timeout=1800,
        )
        used = in_node(imap, ["zfs", "get", "-Hp", "-o", "value", "used", dataset]).stdout
        src = SSHConnector(imap.address, imap.port, pkey=pkey, known_host_keys=imap.known_host_keys)
        dst = SSHConnector(
            backup.address, backup.port, pkey=pkey, known_host_keys=backup.known_host_keys
        )
        copy = f"{backup_pool}/copies/{DOMAIN}"
        keep = {"enabled": False}
        target_dir = base / "target"
        target_dir.mkdir()
        target = NfsTarget(str(target_dir))

        t_snap1, _ = _timed(src.run, ["zfs", "snapshot", f"{dataset}@ums-manual-20261207T000000Z"])
        t_full, full = _timed(offnode.copy_to_node, src, dst, dataset, copy, keep)
        t_full_obj, full_obj = _timed(
            offnode.copy_to_target, src, target, dataset, DOMAIN, full_every=30, keep_chains=2
        )
        in_node(
            imap,
            ["python3", "-c", POPULATE, mount, str(new), str(mailboxes), str(messages), DOMAIN],
            timeout=600,
        )
        t_snap2, _ = _timed(src.run, ["zfs", "snapshot", f"{dataset}@ums-manual-20261207T010000Z"])
        t_incr, incr = _timed(offnode.copy_to_node, src, dst, dataset, copy, keep)
        t_incr_obj, incr_obj = _timed(
            offnode.copy_to_target, src, target, dataset, DOMAIN, full_every=30, keep_chains=2
        )
        t_idle, idle = _timed(offnode.copy_to_node, src, dst, dataset, copy, keep)
        # A full Maildir archive of the newest snapshot (through a clone), Trash left out.
        t_arch, arch = _timed(
            offnode_archive.archive_to_target,
            src,
            target,
            live=mount,
            dataset=dataset,
            domain_name=DOMAIN,
            excl=Exclusions(folders=frozenset({"Trash"})),
            keep=2,
            key=1,
            full_every=7,
        )
        # Same snapshots (by GUID) on both sides; txg numbers are per pool.
        same = [(s.name, s.guid) for s in oz.list_snaps(src, dataset) or []] == [
            (s.name, s.guid) for s in oz.list_snaps(dst, copy) or []
        ]
        # After that comparison (the copy never gets this snapshot): 1 % more new mail and
        # a snapshot, archived as an increment of the archive above (only the new
        # messages, plus the index of the whole tree).
        in_node(
            imap,
            [
                "python3",
                "-c",
                POPULATE,
                mount,
                str(new),
                str(mailboxes),
                str(messages + new),
                DOMAIN,
            ],
            timeout=600,
        )
        src.run(["zfs", "snapshot", f"{dataset}@ums-manual-20261207T020000Z"])
        t_arch_inc, arch_inc = _timed(
            offnode_archive.archive_to_target,
            src,
            target,
            live=mount,
            dataset=dataset,
            domain_name=DOMAIN,
            excl=Exclusions(folders=frozenset({"Trash"})),
            keep=2,
            key=1,
            full_every=7,
        )
        assert arch_inc["sent"]["kind"] == "incremental", arch_inc
        src.close()
        dst.close()

        def rate(nbytes: int, seconds: float) -> float:
            return round(nbytes / seconds / 1e6, 1) if seconds else 0.0

        return {
            "messages": messages,
            "mailboxes": mailboxes,
            "new_messages": new,
            "dataset_used_bytes": int(used.strip() or 0),
            "populate_s": round(t_populate, 1),
            "snapshot_s": round(t_snap1, 3),
            "snapshot_after_new_mail_s": round(t_snap2, 3),
            "full_send_to_backup_node_s": round(t_full, 2),
            "full_send_bytes": full["bytes"],
            "full_send_mb_per_s": rate(full["bytes"], t_full),
            "incremental_pass_s": round(t_incr, 2),
            "incremental_bytes": incr["bytes"],
            "idle_pass_s": round(t_idle, 2),
            "idle_pass_sent": idle["sent"],
            "full_to_target_s": round(t_full_obj, 2),
            "full_to_target_mb_per_s": rate(full_obj["bytes"], t_full_obj),
            "incremental_to_target_s": round(t_incr_obj, 2),
            "incremental_to_target_bytes": incr_obj["bytes"],
            "maildir_archive_s": round(t_arch, 2),
            "maildir_archive_bytes": arch["bytes"],
            "maildir_archive_mb_per_s": rate(arch["bytes"], t_arch),
            "maildir_increment_s": round(t_arch_inc, 2),
            "maildir_increment_bytes": arch_inc["bytes"],
            "maildir_increment_index_stored_bytes": (
                target_dir / archive_chain.index_name(arch_inc["sent"]["archive"])
            )
            .stat()
            .st_size,
            "copy_identical": same,
        }
    finally:
        for index in started_pools:
            _stop_zfs(cluster.nodes[index], pools[index])
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--mailboxes", type=int, default=20)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    bootstrap.database_url()
    bootstrap.setup_django()
    figures = run(args.messages, args.mailboxes, args.new)
    result = {
        "benchmark": "offnode",
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "figures": figures,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:32} {value}")
    return 0 if figures["copy_identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
