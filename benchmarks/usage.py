"""Benchmark of issue 17 item 2: the daily usage snapshot of 10,000 customers, 1M mailboxes.

Seeds the mail benchmark's data set with COPY (benchmarks/mail.py's seeding: here 10,000
customers in four levels, 20,000 domains, 1,000,000 mailboxes; skipped when already
there), gives every mailbox a measured used space and some customers held mail (one
UPDATE / generate_series, not timed), then times ``usage.snapshot.take``:

* the first snapshot of a day (every row inserted; target under 60 s);
* the same day again (every row rewritten by the upsert: what each beat run does);

and checks that the root's subtree sums equal the sum over all customers.

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_usage .venv/bin/python benchmarks/usage.py

The database name must contain "bench": reseeding drops and recreates it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import mail  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "issue17_usage.json"
TARGET_S = 60.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--mailboxes", type=int, default=1_000_000)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def _prepare() -> None:
    """Measured used space for every mailbox and held mail for every tenth customer."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE mail_mailbox SET used_bytes = (id * 7919) % (quota_mb::bigint * 1048576), "
            "used_updated_at = now() WHERE used_bytes IS NULL"
        )
        cursor.execute("SELECT COUNT(*) FROM spamhold_heldmessage")
        if cursor.fetchone()[0] == 0:
            cursor.execute(
                "INSERT INTO spamhold_heldmessage (node_id, node_name, queue_id, customer_id, "
                "customer_path, received_at, sender, sender_domain, recipients, recipient, "
                "recipient_domain, subject, size, reason, reason_detail, spam_score, "
                "spam_rules, virus_name, attachment_name, status, expires_at, first_seen_at, "
                "last_seen_at, outcome, handled_at, handled_by_id, handled_by_name, node_error) "
                "SELECT NULL, 'smtp1', c.id || '-' || g, c.id, c.path, now(), "
                "'spam@outside.test', 'outside.test', '[]'::jsonb, '', '', 'offer', 2000, "
                "'spam', '', 7.5, '[]'::jsonb, '', '', 'ONHOLD', now() + interval '30 days', "
                "now(), now(), '', NULL, NULL, '', '' "
                "FROM tenants_customer c, generate_series(1, 3) g WHERE c.id % 10 = 0"
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE mail_mailbox")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = mail.database_url()
    seed_args = mail.parse_args(
        ["--customers", str(args.customers), "--mailboxes", str(args.mailboxes)]
    )
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
    started = time.perf_counter()
    _prepare()
    print(f"used space and held mail prepared in {time.perf_counter() - started:.1f} s")

    from django.db.models import Sum

    from tenants.models import Customer
    from usage import snapshot
    from usage.models import DailyUsage

    day = datetime.date(2026, 1, 1)
    DailyUsage.objects.filter(day=day).delete()
    timings = {}
    for label in ("first", "again"):
        started = time.perf_counter()
        rows = snapshot.take(day)
        timings[label] = round(time.perf_counter() - started, 2)
        print(f"snapshot ({label}): {rows} rows in {timings[label]} s", flush=True)
    rows = DailyUsage.objects.filter(day=day)
    total = rows.aggregate(m=Sum("own_mailboxes"), u=Sum("own_used_bytes"))
    root = rows.get(customer=Customer.objects.get(parent__isnull=True))
    assert root.tree_mailboxes == total["m"] and root.tree_used_bytes == total["u"], "sums"
    report = {
        "benchmark": "daily usage snapshot (issue 17 item 2)",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "customers": Customer.objects.count(),
        "mailboxes": root.tree_mailboxes,
        "rows": rows.count(),
        "first_snapshot_seconds": timings["first"],
        "repeat_snapshot_seconds": timings["again"],
        "target_seconds": TARGET_S,
        "passed": max(timings.values()) < TARGET_S,
    }
    print(json.dumps(report, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
