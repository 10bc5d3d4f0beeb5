"""Benchmark of issue 13 item 5: a controller dump at 1,000,000 mailboxes, and its drill.

Seeds the mail benchmark's data set with COPY (2,000 customers, 20,000 domains,
1,000,000 mailboxes; benchmarks/mail.py's seeding, skipped when already there), then:

* runs one "Dump now" job in this process (``pg_dump`` of the database, keys, settings,
  node configurations, encrypted, written to a directory target with its manifest) and
  reports its time and the sizes (database plain and encrypted, whole dump);
* runs ``restore_drill`` from that dump into a fresh empty database (checksums,
  decryption, ``pg_restore``, keys, ``audit_verify``) and reports its time.

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_dump .venv/bin/python benchmarks/dump.py

The database name must contain "bench": reseeding drops and recreates it.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import mail  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "issue13_dump.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=1_000_000)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--no-drill", action="store_true", help="only time the dump")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def _drill_url(url: str) -> str:
    name = urlsplit(url).path.lstrip("/") + "_drill"
    return urlsplit(url)._replace(path="/" + name).geturl()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = mail.database_url()
    seed_args = mail.parse_args(["--mailboxes", str(args.mailboxes)])
    wanted = {"customers": seed_args.customers, "domains": seed_args.domains,
              "mailboxes": seed_args.mailboxes, "seed": seed_args.seed}  # fmt: skip
    have = mail.seeded_sizes(url)
    if args.reseed or have != wanted:
        print(f"seeding {wanted} (was {have})", flush=True)
        mail.recreate_database(url)
        mail.setup_django()
        print(f"seeded in {mail.seed(seed_args)['total']} s", flush=True)
    else:
        mail.setup_django()
        print(f"database already seeded with {have}", flush=True)

    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import override_settings

    from backup import actions, dumps_actions
    from backup.models import BackupTarget
    from mail.models import Mailbox
    from tenants.models import Customer
    from ums.models import Job

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        db_bytes = cursor.fetchone()[0]
    top = Customer.objects.filter(parent__isnull=True).order_by("id").first()
    with tempfile.TemporaryDirectory(prefix="ums-bench-dump-") as folder:
        BackupTarget.objects.filter(name="bench dumps").delete()
        target = actions.create_target(
            actor=None, customer=top, name="bench dumps", kind="nfs", nfs_path=folder
        )
        with override_settings(UMS_DUMP_TARGETS=[str(target.pk)], UMS_DUMP_KEEP=1):
            started = time.perf_counter()
            job = dumps_actions.start_dump(actor=None)
            dump_seconds = time.perf_counter() - started
        job = Job.objects.get(pk=job.pk)
        if job.status != Job.SUCCEEDED:
            raise SystemExit(f"bench: the dump failed: {job.error}\n{job.log}")
        from backup import dumps
        from backup.drivers import driver_for

        manifest = dumps.read_listing(driver_for(target)).complete[job.result["dump"]]
        database = next(o for o in manifest["objects"] if o["name"] == "database.pgdump")
        drill_seconds = None
        if not args.no_drill:
            drill = _drill_url(url)
            mail.recreate_database(drill)
            started = time.perf_counter()
            call_command(
                "restore_drill", target=target.pk, database_url=drill, stdout=io.StringIO()
            )
            drill_seconds = round(time.perf_counter() - started, 2)
            mail.recreate_database(drill)  # leave it empty, not 1M mailboxes twice
        target.delete()
    report = {
        "benchmark": "controller dump (issue 13 item 5)",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "mailboxes": Mailbox.objects.count(),
        "database_bytes": db_bytes,
        "dump_seconds": round(dump_seconds, 2),
        "database_dump_plain_bytes": database["plain_size"],
        "database_dump_encrypted_bytes": database["size"],
        "dump_total_bytes": manifest["total_size"],
        "objects": len(manifest["objects"]) + 1,
        "postgres": manifest["postgres"],
        "drill_seconds": drill_seconds,
    }
    print(json.dumps(report, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
