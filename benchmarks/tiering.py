"""Benchmark of issue 14 part 4: a tiering pass over a mail store of 100,000 messages.

One domain of ``--mailboxes`` Maildir++ mailboxes (inbox and two folders each) holding
``--messages`` messages in all, sizes log-normal around 4 KB, every one idle. The timed
run is the code the ``backup.tier_node`` job runs: :func:`backup.tiering.node_program`
called in time slices of ``SLICE_SECONDS`` with the constant node program
(:mod:`backup.tier_node`) until it says finished, through a connector that runs the
command locally (the SSH hop, ~0.3 s per session, is the only thing left out). Each
message is copied to the tier, fsynced, renamed, read back and hashed against the
original, then replaced by a link.

Then a second pass (nothing left to tier: the cost of walking a tiered store), and a
check: every message is a link into the tier, the tier holds each exactly once, and
every message reads back byte for byte through its link.

``--store zfs`` puts the mail root on a private zfs-fuse pool (needs root and zfs-fuse,
as the tests); ``--store disk`` (default) a folder on the local disk. The tier is a
folder on the local disk (the NFS/CIFS-mount case; the kernel here has neither).

Usage::

    .venv/bin/python benchmarks/tiering.py [--messages 100000] [--store disk|zfs]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "tiering.json"
DOMAIN = "bench-tier.example"
FOLDERS = ("", ".Sent", ".Archive")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--mailboxes", type=int, default=50)
    parser.add_argument("--store", choices=["disk", "zfs"], default="disk")
    parser.add_argument("--pool-size", default="2G")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def body(i: int, rng: random.Random) -> bytes:
    size = max(300, min(int(rng.lognormvariate(8.3, 0.8)), 200_000))
    head = f"From: bench@outside.test\nSubject: bench {i}\n\n".encode()
    line = f"message {i} line of text for the tiering benchmark\n".encode()
    return head + (line * (size // len(line) + 1))[:size]


def seed(root: Path, count: int, mailboxes: int) -> dict[str, str]:
    """Write the messages (all idle); ``{relative path: sha256}``."""
    rng = random.Random(14)
    hashes: dict[str, str] = {}
    base = root / DOMAIN
    for m in range(mailboxes):
        for folder in FOLDERS:
            for sub in ("cur", "new", "tmp"):
                (base / f"user{m}" / "Maildir" / folder / sub).mkdir(parents=True, exist_ok=True)
    old = time.time() - 400 * 86400
    for i in range(count):
        box = i % mailboxes
        folder = FOLDERS[(i // mailboxes) % len(FOLDERS)]
        name = f"{int(old) + i}.M{i}P1.bench:2,S"
        rel = f"{DOMAIN}/user{box}/Maildir/{folder}/cur/{name}".replace("//", "/")
        data = body(i, rng)
        (root / rel).write_bytes(data)
        hashes[rel] = hashlib.sha256(data).hexdigest()
    return hashes


@contextlib.contextmanager
def mail_root(args: argparse.Namespace, work: Path) -> Iterator[tuple[Path, object]]:
    from tests.services.localconn import LocalConnector

    if args.store == "disk":
        root = work / "vhosts"
        root.mkdir()
        yield root, LocalConnector()
        return
    from tests.backup.privzfs import NsConnector, private_zfs

    with private_zfs(work, size=args.pool_size) as zfs:
        conn = NsConnector(zfs)
        root = work / "zfsmail"
        result = conn.run(["zfs", "create", "-o", f"mountpoint={root}", f"{zfs.pool}/mail"])
        assert result.ok, result.stderr
        yield root, conn


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ums.settings")
    import django

    django.setup()
    from backup import tiering

    work = Path(tempfile.mkdtemp(prefix="ums-bench-tier-", dir=args.workdir))
    try:
        with mail_root(args, work) as (root, conn):
            tier = work / "tier"
            tier.mkdir()
            started = time.perf_counter()
            hashes = seed(root, args.messages, args.mailboxes)
            seed_s = time.perf_counter() - started
            total_bytes = sum((root / rel).stat().st_size for rel in hashes)
            pass_args = {
                "op": "tier",
                "root": str(root),
                "mount": {"kind": "folder", "point": str(tier)},
                "lock_dir": str(work),
                "domains": [DOMAIN],
                "idle_days": 30,
                # ctime (just written) cannot be set back: the clock moves forward instead.
                "now": time.time() + 31 * 86400,
                "recall": False,
                "budget": tiering.SLICE_SECONDS,
            }

            def one_pass() -> tuple[float, int, int, dict]:
                calls = tiered = 0
                began = time.perf_counter()
                while True:
                    answer = tiering.node_program(conn, sys.executable, pass_args)
                    calls += 1
                    tiered += int(answer["tiered"])
                    if answer["finished"]:
                        return time.perf_counter() - began, calls, tiered, answer["usage"]

            first_s, first_calls, tiered, usage = one_pass()
            again_s, _again_calls, again_tiered, _usage = one_pass()
            # Check: every message a link into the tier, reading back as written.
            links = bad = 0
            for rel, digest in hashes.items():
                path = root / rel
                if path.is_symlink() and os.readlink(path).startswith(str(tier) + "/"):
                    links += 1
                if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                    bad += 1
            copies = sum(1 for p in tier.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = tiered == args.messages and links == args.messages and bad == 0
    ok = ok and copies == args.messages and again_tiered == 0
    ok = ok and usage[DOMAIN]["tier_messages"] == args.messages
    result = {
        "benchmark": "tiering",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "store": args.store,
        "messages": args.messages,
        "mailboxes": args.mailboxes,
        "bytes": total_bytes,
        "seed_s": round(seed_s, 1),
        "tier_pass_s": round(first_s, 1),
        "messages_per_s": round(args.messages / first_s),
        "mb_per_s": round(total_bytes / first_s / 1e6, 1),
        "tiered": tiered,
        "node_calls": first_calls,
        "second_pass_s": round(again_s, 2),
        "checked": {"links": links, "copies": copies, "mismatched": bad, "ok": ok},
    }
    print(json.dumps(result, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
