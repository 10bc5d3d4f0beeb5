"""Benchmark of issue 13: restore of one mailbox of 5,000 messages from a ZFS snapshot.

On a real zfs-fuse pool (a private daemon in its own mount namespace, as the restore tests
use: ``tests/backup/privzfs.py``), a domain dataset (compression on, the product's
default) holds one Maildir++ mailbox of ``--messages`` messages spread over the inbox and
three folders, sizes log-normal around 8 KB (a few up to 1 MB). After a snapshot, the
measured runs go through :func:`backup.restore_run.run`, the code the ``backup.restore``
job runs, with a connector that executes the node commands locally (the SSH hop is the
only thing left out; it costs ~0.3 s per session plus a few ms per command):

1. the whole mailbox into a new folder ``Restored <date>`` (every message copied);
2. in place after the user deleted the largest folder (that folder's messages copied
   back, the other messages compared by Maildir unique name and left alone);
3. the same in-place restore again (nothing to do: the cost of the comparison).

Target: run 1 under 30 s. Every run is checked (each message exactly once where it
belongs), and the number of node commands and progress reports is recorded.

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_restore \\
        .venv/bin/python benchmarks/restore.py

The database name must contain "bench": it is dropped and recreated. Needs root and
zfs-fuse (as the tests do).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.mail import database_url, recreate_database  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "restore.json"
TARGET_S = 30.0
DOMAIN = "bench-restore.example"
FOLDERS = {"": 0.5, ".Sent": 0.2, ".Archive": 0.25, ".Archive.2025": 0.05}
MAIL_UID = 5000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--pool-size", default="1G")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def setup(url: str) -> None:
    recreate_database(url)
    os.environ["DJANGO_SETTINGS_MODULE"] = "ums.settings"
    os.environ["UMS_TASKS_IN_PROCESS"] = "true"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def write_mailbox(maildir: Path, count: int) -> dict[str, int]:
    """``count`` messages over the folders; returns the count per folder."""
    rng = random.Random(13)
    counts: dict[str, int] = {}
    names = list(FOLDERS)
    for index in range(count):
        folder = rng.choices(names, weights=list(FOLDERS.values()))[0]
        counts[folder] = counts.get(folder, 0) + 1
        base = maildir / folder if folder else maildir
        if counts[folder] == 1:
            for sub in ("cur", "new", "tmp"):
                (base / sub).mkdir(parents=True, exist_ok=True)
                os.chown(base / sub, MAIL_UID, MAIL_UID)
            if folder:
                (base / "maildirfolder").touch()
        size = min(int(rng.lognormvariate(8.9, 1.0)), 1_000_000)
        body = base64.encodebytes(rng.randbytes(size * 3 // 4)).decode()
        name = f"{1733000000 + index}.M{index}P1.bench,S={size}:2,S"
        path = base / "cur" / name
        path.write_text(
            f"From: someone@outside.test\nTo: alice@{DOMAIN}\nSubject: bench {index}\n\n{body}"
        )
        os.chown(path, MAIL_UID, MAIL_UID)
    return counts


def count_files(folder: Path) -> int:
    return sum(len(os.listdir(folder / sub)) for sub in ("cur", "new") if (folder / sub).is_dir())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = database_url()
    if "bench" not in url.rsplit("/", 1)[-1]:
        raise SystemExit("bench: the database name must contain 'bench' (it is recreated)")
    setup(url)
    from django.conf import settings

    from backup import restore, restore_run
    from backup.models import Snapshot
    from mail import actions as mail_actions
    from servers import actions as server_actions
    from servers.choices import NodeStatus
    from servers.models import Node
    from tenants import actions as tenant_actions
    from tests.backup.privzfs import NsConnector, private_zfs

    workdir = Path(tempfile.mkdtemp(prefix="ums-bench-restore-"))
    results: dict = {
        "messages": args.messages,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": os.getloadavg(),
    }
    try:
        with private_zfs(workdir, args.pool_size) as zfs:
            root = workdir / "vhosts"
            dataset = f"{zfs.pool}/mail/{DOMAIN}"
            zfs.run("zfs", "create", f"{zfs.pool}/mail")
            zfs.run(
                "zfs",
                "create",
                "-o",
                "compression=on",
                "-o",
                f"mountpoint={root}/{DOMAIN}",
                dataset,
            )
            settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "mail_root": str(root)}
            maildir = zfs.path(root / DOMAIN / "alice" / "Maildir")
            started = time.perf_counter()
            counts = write_mailbox(maildir, args.messages)
            for path in (maildir, maildir.parent):
                os.chown(path, MAIL_UID, MAIL_UID)
            results["seed_seconds"] = round(time.perf_counter() - started, 1)
            results["folders"] = counts
            name = "ums-manual-20261201T000000Z"
            zfs.run("zfs", "snapshot", f"{dataset}@{name}")
            referenced = zfs.run(
                "zfs", "get", "-Hp", "-o", "value", "referenced", f"{dataset}@{name}"
            )
            results["snapshot_bytes"] = int(referenced.stdout.strip())

            customer = tenant_actions.create_customer(actor=None, name="Bench", parent=None)
            domain = mail_actions.create_domain(
                actor=None, customer=customer, name=DOMAIN, contact_email="hostmaster@example.net"
            )
            mailbox = mail_actions.create_mailbox(
                actor=None, domain=domain, local_part="alice", password="Bench-Restore-Pass-55"
            )
            zone = server_actions.create_zone(actor=None, customer=customer, name="Bench DC")
            node = Node.objects.create(
                customer=customer,
                customer_path=customer.path,
                zone=zone,
                hostname="imap-bench.example",
                ssh_address="192.0.2.9",
                status=NodeStatus.ACTIVE,
                roles=["imap"],
            )
            when = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
            snap = Snapshot.objects.create(
                node=node,
                domain=domain,
                customer_path=domain.customer_path,
                dataset=dataset,
                name=name,
                tier="manual",
                taken_at=when,
                observed_at=when,
            )
            conn = NsConnector(zfs)

            def timed(label: str, job_id: int, params: dict) -> dict:
                reports: list[tuple[int, int]] = []
                before = len(conn.commands)
                started = time.perf_counter()
                summary = restore_run.run(
                    conn,
                    job_id,
                    {"snapshot_id": snap.pk, "mailbox_id": mailbox.pk, "folder": None, **params},
                    python="/usr/bin/python3",  # the node's Python, as on Debian nodes
                    progress=lambda done, total: reports.append((done, total)),
                )
                seconds = time.perf_counter() - started
                row = {
                    "seconds": round(seconds, 2),
                    "messages_per_second": round(args.messages / seconds),
                    "node_commands": len(conn.commands) - before,
                    "progress_reports": len(reports),
                    "copied": summary["copied"],
                    "flags_restored": summary["flags_restored"],
                }
                print(
                    f"{label:<40} {row['seconds']:>7.2f} s  {row['node_commands']:>3} commands  "
                    f"{row['progress_reports']:>3} progress reports  {row['copied']:>5} copied"
                )
                return row

            restored = f".Restored {restore.restored_date(snap).isoformat()}"
            results["new_folder"] = timed(
                "whole mailbox into a new folder", 1, {"mode": "new_folder"}
            )
            total = sum(count_files(maildir / (restored + f)) for f in FOLDERS)
            assert total == args.messages, (total, args.messages)
            assert results["new_folder"]["copied"] == args.messages

            shutil.rmtree(maildir / ".Archive")
            results["in_place"] = timed("in place, a deleted folder", 2, {"mode": "in_place"})
            assert count_files(maildir / ".Archive") == counts[".Archive"]
            results["in_place"]["copied_expected"] = counts[".Archive"]
            results["in_place_again"] = timed(
                "in place again (nothing to copy)", 3, {"mode": "in_place"}
            )
            assert results["in_place_again"]["copied"] == 0
            assert sum(count_files(maildir / f if f else maildir) for f in FOLDERS) == args.messages
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    passed = results["new_folder"]["seconds"] < TARGET_S
    results["target_seconds"] = TARGET_S
    results["passed"] = passed
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"target: whole mailbox of {args.messages} messages under {TARGET_S:.0f} s: "
        f"{'met' if passed else 'MISSED'} ({results['new_folder']['seconds']} s)"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
