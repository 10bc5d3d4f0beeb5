"""Benchmark of issue 17 item 2: the daily usage snapshot of 10,000 customers, 1M mailboxes.

Seeds the mail benchmark's data set with COPY (benchmarks/mail.py's seeding: here 10,000
customers in four levels, 20,000 domains, 1,000,000 mailboxes; skipped when already
there), gives every mailbox a measured used space, every fourth one a cloud files account (every
eighth enabled) and some customers held mail (one statement each, not timed), then times
``usage.snapshot.take``:

* the first snapshot of a day (every row inserted; target under 60 s);
* the same day again (every row rewritten by the upsert: what each beat run does);

and checks that the root's subtree sums equal the sum over all customers. It times storing
one node's answer for all 1M mailboxes (all new, unchanged, a tenth changed), and one
cloud files node's usage report for 250,000 accounts. It fills a
year of snapshots (3.65M rows, copied from that day with generate_series, not timed) and
times the year report of a reseller's subtree, by child and by day, through the API with
a real token (target p95 under 200 ms).

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
_FIGURES = ("mailboxes", "aliases", "domains", "quota_mb", "used_bytes", "held_messages",
            "files_bytes", "files_users", "chat_users")  # fmt: skip
_COLUMNS = ", ".join(f"{k}_{n}" for k in ("own", "tree") for n in _FIGURES)
REPORT_TARGET_MS = 200.0


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
        # Cloud files: every fourth mailbox has an account with files, every eighth one
        # enabled (cloudfiles.CloudAccount, as the converge and the collection write it).
        cursor.execute("SELECT COUNT(*) FROM cloudfiles_cloudaccount")
        if cursor.fetchone()[0] == 0:
            cursor.execute(
                "INSERT INTO cloudfiles_cloudaccount (mailbox_id, customer_id, customer_path, "
                "active, used_bytes, converged_at, measured_at) SELECT id, customer_id, "
                "customer_path, id % 8 = 0, (id * 104729) % 5368709120, now(), now() "
                "FROM mail_mailbox WHERE id % 4 = 0"
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
        cursor.execute("ANALYZE cloudfiles_cloudaccount")


def _record_cloud_node() -> dict[str, float]:
    """Storing one cloud files node's usage report for the 250,000 accounts of the whole
    tree (what ``cloudfiles.collect.record`` does after the node's one occ command):
    unchanged, then a tenth changed."""
    from django.db import connection

    from cloudfiles import collect
    from servers.models import Node
    from tenants.models import Customer

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT m.email, a.used_bytes FROM cloudfiles_cloudaccount a "
            "JOIN mail_mailbox m ON m.id = a.mailbox_id"
        )
        used = dict(cursor.fetchall())
    node = Node(hostname="files-bench", customer_path=Customer.objects.get(parent=None).path)
    tenth = {uid: v + 4096 if i % 10 == 0 else v for i, (uid, v) in enumerate(used.items())}
    timings = {}
    for label, report in (("unchanged", used), ("tenth", tenth)):
        started = time.perf_counter()
        collect.record(node, report)
        timings[label] = round(time.perf_counter() - started, 1)
        print(f"record {len(report)} cloud accounts ({label}): {timings[label]} s", flush=True)
    return timings


def _record_one_node() -> dict[str, float]:
    """Storing one node's answer for all 1M mailboxes: every value new, then unchanged,
    then a tenth changed (what ``usage.collect.record`` does after each node's command)."""
    from django.db import connection

    from usage import collect

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE usage_mailboxusage, usage_quotawarning")
        cursor.execute("SELECT id, quota_mb FROM mail_mailbox")
        quotas = cursor.fetchall()
    salt = int(time.time()) % 1000 + 1  # new values on every run
    values = {pk: ((pk * 7919 + salt) % (q * 1048576), pk % 500) for pk, q in quotas}
    tenth = {pk: (v[0] + 4096, v[1] + 1) if pk % 10 == 0 else v for pk, v in values.items()}
    timings = {}
    for label, measurements in (("all_new", values), ("unchanged", values), ("tenth", tenth)):
        started = time.perf_counter()
        collect.record(measurements)
        timings[label] = round(time.perf_counter() - started, 1)
        print(f"record 1M measurements ({label}): {timings[label]} s", flush=True)
    return timings


def _year_reports(day: datetime.date) -> dict[str, dict[str, float]]:
    """A year of rows (copies of ``day``), then the year report of a reseller via the API."""
    from django.db import connection, transaction
    from django.urls import reverse

    from usage.models import DailyUsage

    start = day - datetime.timedelta(days=364)
    if DailyUsage.objects.filter(day=start).count() == 0:
        began = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            # Only constant column names are joined in; the dates are parameters.
            cursor.execute(
                "INSERT INTO usage_dailyusage (customer_id, customer_path, parent_id_at_day, "  # noqa: S608
                "day, taken_at, " + _COLUMNS + ") SELECT customer_id, customer_path, "
                "parent_id_at_day, %s::date + g, taken_at, " + _COLUMNS + " FROM "
                "usage_dailyusage, generate_series(0, 363) g WHERE day = %s",
                [start, day],
            )
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE usage_dailyusage")
        print(f"a year of snapshots in {time.perf_counter() - began:.1f} s", flush=True)
    people = mail.ensure_people()
    # The reseller's own administrator, as an ISP would ask for its bill.
    client = mail.client_for(people["mid"]["token"])
    reseller = people["mid"]["admin"].customer
    results = {}
    for group in ("child", "day"):
        url = reverse("usage-report") + (
            f"?customer={reseller.pk}&from={start}&to={day}&group={group}"
        )
        samples, _response = mail.time_gets(client, [url], 100, 10)
        results[group] = mail.stats(samples)
    return results


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
    total = rows.aggregate(
        m=Sum("own_mailboxes"), u=Sum("own_used_bytes"), f=Sum("own_files_bytes"),
        fu=Sum("own_files_users"),
    )  # fmt: skip
    root = rows.get(customer=Customer.objects.get(parent__isnull=True))
    assert root.tree_mailboxes == total["m"] and root.tree_used_bytes == total["u"], "sums"
    assert root.tree_files_bytes == total["f"] and root.tree_files_users == total["fu"], "sums"
    assert root.tree_files_users > 0, "cloud files figures counted"
    reports = _year_reports(day)
    recording = _record_one_node()
    cloud_recording = _record_cloud_node()
    report = {
        "benchmark": "daily usage snapshot and year report (issue 17 items 2 and 3)",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "customers": Customer.objects.count(),
        "mailboxes": root.tree_mailboxes,
        "rows": rows.count(),
        "first_snapshot_seconds": timings["first"],
        "repeat_snapshot_seconds": timings["again"],
        "target_seconds": TARGET_S,
        "year_report_ms": reports,
        "record_measurements_seconds": recording,
        "files_users": root.tree_files_users,
        "record_cloud_accounts_seconds": cloud_recording,
        "report_target_ms_p95": REPORT_TARGET_MS,
        "passed": max(timings.values()) < TARGET_S
        and all(r["p95"] < REPORT_TARGET_MS for r in reports.values()),
    }
    print(json.dumps(report, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
