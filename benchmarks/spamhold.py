"""Benchmark of issue 6 (spam hold query) on PostgreSQL, through the full stack.

Seeds 1,000,000 held messages from 1,000 sender domains (``gmail.com`` is one of them)
over 100 customers with ``INSERT ... SELECT generate_series`` (skipped when the database
already holds the same sizes), then times requests in-process with Django's test client
and a real API token, so every middleware, token authentication, DRF and the renderer run:

* the product sheet's query, first page, one sender domain, ``ONHOLD``, whole time range
  (``POST /api/v1/spamhold/query/``; target p95 < 15 ms), root administrator;
* the same for a customer administrator (their subtree only);
* the same query's second page (cursor);
* the unfiltered queue of the root administrator (``GET /api/v1/spamhold/messages/?status=ONHOLD``)
  and the counts per reason for one domain (no target; reported).

Release of 10,000 messages and ingestion of 10,000 from a real node are not measured here
(they need real nodes; the spam-hold backend's benchmarks do that).

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_spamhold \\
        .venv/bin/python benchmarks/spamhold.py

The database name must contain "bench": reseeding drops and recreates it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.mail import (  # noqa: E402
    CPU,
    _secondary_indexes,
    client_for,
    database_url,
    explain,
    recreate_database,
    seeded_sizes,
    setup_django,
    stats,
    wait_quiet,
)
from benchmarks.seeding import index_statistics  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "spamhold.json"
SEED_TABLE = "bench_mail_seed"  # the name benchmarks.mail.seeded_sizes reads
QUERY_TARGET_MS = 15.0
PASSWORD = "bench-Password-not-secret-1"
QUERY_URL = "/api/v1/spamhold/query/"
COUNTS_URL = "/api/v1/spamhold/counts/"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--domains", type=int, default=1_000)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per case")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument(
        "--skip-filters",
        action="store_true",
        help="only the sheet's cases, not every filter alone and with a time range",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument(
        "--wait-quiet",
        type=int,
        default=0,
        metavar="SECONDS",
        help="wait up to SECONDS for the 1-minute load average to drop below 1.5 before timing",
    )
    return parser.parse_args(argv)


def domain_name(index: int) -> str:
    return "gmail.com" if index == 0 else f"sender{index}.example"


def seed(args: argparse.Namespace) -> dict[str, float]:
    """Customers by COPY, held messages by one INSERT ... SELECT generate_series."""
    from django.db import connection, transaction

    from tenants.models import Customer

    timings: dict[str, float] = {}
    now = datetime.datetime.now(datetime.UTC)
    started = time.perf_counter()
    with transaction.atomic():
        customers = [(1, None, "/1/", 0, "Provider")]
        customers += [(i, 1, f"/1/{i}/", 1, f"Customer {i}") for i in range(2, args.customers + 2)]
        # The ORM fills every column the tree has (defaults included); 101 rows.
        Customer.objects.bulk_create(
            [Customer(id=c[0], parent_id=c[1], path=c[2], depth=c[3], name=c[4]) for c in customers]
        )
        indexes = _secondary_indexes("spamhold_heldmessage")
        statistics = index_statistics([name for name, _ in indexes])
        with connection.cursor() as cursor:
            for name, _definition in indexes:
                cursor.execute(f'DROP INDEX "{name}"')
            cursor.execute("SELECT setseed(%s)", [args.seed / 1000])
            insert_started = time.perf_counter()
            # Received over the last 30 days; 70 % on hold, the rest handled or expired;
            # senders spread evenly over the domains (about one message per address, but
            # Bulk@sender7.example sends every message of its domain), recipients over the
            # customers (a fifth with a second, shared recipient); subjects from 8 stems,
            # 10,007 numbers and 5 words, so a needle can be rare or common. Rows go in in
            # received order, as mail arrives (the heap follows time, as in production).
            cursor.execute(
                """
                INSERT INTO spamhold_heldmessage (
                    node_id, node_name, queue_id, customer_id, customer_path, received_at,
                    sender, sender_domain, recipients, recipient, recipient_domain, subject,
                    size, reason, reason_detail, spam_score, spam_rules, virus_name,
                    attachment_name, status, expires_at, first_seen_at, last_seen_at,
                    outcome, handled_at, handled_by_id, handled_by_name, node_error)
                SELECT NULL, 'smtp' || (g %% 4 + 1), lpad(to_hex(g), 12, '0'),
                    c, '/1/' || c || '/', t,
                    CASE WHEN g %% %(domains)s = 7 THEN 'Bulk@' || d
                         ELSE 'User' || (g %% 997) || '@' || d END, d,
                    CASE WHEN g %% 5 = 0
                         THEN jsonb_build_array(r, 'team' || (g %% 7) || '@customer' || c
                                                || '.example')
                         ELSE jsonb_build_array(r) END,
                    r, 'customer' || c || '.example',
                    (ARRAY['Offer','Invoice','Your order','Meeting','Re: project',
                           'Password reset','Newsletter','Delivery failed'])[g %% 8 + 1]
                        || ' ' || (g %% 10007) || ' '
                        || (ARRAY['cheap','urgent','weekly','final','new'])[g %% 5 + 1],
                    2000 + g %% 50000,
                    (ARRAY['spam','spam','spam','virus','attachment','sender','header','other'])
                        [g %% 8 + 1],
                    '', 7.5, '[]'::jsonb, '', '',
                    CASE WHEN g %% 10 < 7 THEN 'ONHOLD' WHEN g %% 10 < 8 THEN 'RELEASED'
                         WHEN g %% 10 < 9 THEN 'DELETED' ELSE 'EXPIRED' END,
                    t + interval '30 days', t, t, '', NULL, NULL, '', ''
                FROM (
                    SELECT g,
                        2 + (g::bigint * 7919) %% %(customers)s AS c,
                        CASE WHEN g %% %(domains)s = 0 THEN 'gmail.com'
                             ELSE 'sender' || (g %% %(domains)s) || '.example' END AS d,
                        'staff' || (g %% 50) || '@customer'
                            || (2 + (g::bigint * 7919) %% %(customers)s) || '.example' AS r,
                        %(now)s - (random() * interval '30 days') AS t
                    FROM generate_series(1, %(messages)s) AS g
                ) AS s
                ORDER BY t
                """,
                {
                    "customers": args.customers,
                    "domains": args.domains,
                    "messages": args.messages,
                    "now": now,
                },
            )
            timings["insert"] = round(time.perf_counter() - insert_started, 2)
            # Check the deferred foreign keys now: indexes cannot be built with them pending.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
            for name, definition in indexes:
                index_started = time.perf_counter()
                cursor.execute(definition)
                timings[f"index {name}"] = round(time.perf_counter() - index_started, 2)
            # A recreated index forgets its raised statistics target: set it again.
            for statement in statistics:
                cursor.execute(statement)
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('tenants_customer', 'id'), "
                "(SELECT max(id) FROM tenants_customer))"
            )
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {SEED_TABLE} (key text PRIMARY KEY, value jsonb)"
            )
            cursor.execute(
                f"INSERT INTO {SEED_TABLE} VALUES ('sizes', %s::jsonb)",  # noqa: S608
                [json.dumps(sizes_of(args))],
            )
    analyze_started = time.perf_counter()
    with connection.cursor() as cursor:
        for table in ("tenants_customer", "spamhold_heldmessage"):
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    timings["vacuum analyze"] = round(time.perf_counter() - analyze_started, 2)
    timings["total"] = round(time.perf_counter() - started, 2)
    return timings


def sizes_of(args: argparse.Namespace) -> dict[str, int]:
    return {
        "messages": args.messages,
        "domains": args.domains,
        "customers": args.customers,
        "seed": args.seed,
    }


def ensure_people() -> dict[str, Any]:
    """The root administrator and one customer's administrator, with fresh tokens."""
    from tenants import actions as tenant_actions
    from tenants import permissions as perms
    from tenants.models import Administrator, Customer

    people = {}
    for key, customer_id, username in (("root", 1, "bench.root"), ("mid", 2, "bench.mid")):
        admin = Administrator.objects.filter(username=username).first()
        if admin is None:
            admin = tenant_actions.create_administrator(
                actor=None, customer=Customer.objects.get(pk=customer_id), username=username,
                full_name=username, email=f"{username}@provider.example", password=PASSWORD,
                permissions=list(perms.ALL),
            )  # fmt: skip
        _token, secret = tenant_actions.create_token(actor=admin, name=f"bench {time.time()}")
        people[key] = {"admin": admin, "token": secret}
    return people


def timed(client: Any, method: str, url: str, body: dict | None) -> tuple[float, float, Any]:
    cpu_started = time.process_time()
    started = time.perf_counter()
    if method == "post":
        response = client.post(url, body, content_type="application/json")
    else:
        response = client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    cpu = (time.process_time() - cpu_started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}: {response.content[:300]!r}")
    return elapsed, cpu, response


def last_query_sql(
    client: Any, method: str, url: str, body: dict | None
) -> tuple[int, str, list[str]]:
    """The number of queries of one request, its last held-mail statement and the
    planner settings it ran under (``SET LOCAL``: the counts of a time range)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        timed(client, method, url, body)
    queries = [q["sql"] for q in captured.captured_queries]
    page = next((q for q in reversed(queries) if 'FROM "spamhold_heldmessage"' in q), "")
    settings = [q for q in queries if q.startswith("SET LOCAL")]
    return len(queries), page, settings


def explain_under(sql_text: str, settings: list[str]) -> str:
    """``EXPLAIN ANALYZE`` of ``sql_text`` with the planner settings the request used."""
    from django.db import transaction

    with transaction.atomic():
        if settings:
            from django.db import connection

            with connection.cursor() as cursor:
                for statement in settings:
                    cursor.execute(statement)
        return explain(sql_text)


def execution_ms(plan: str) -> float | None:
    for line in plan.splitlines():
        if line.startswith("Execution Time:"):
            return float(line.split()[2])
    return None


def check_counts(body: dict[str, Any], answer: dict[str, Any], admin: Any) -> None:
    """The counts are truthful: exact ones equal a plain ``COUNT(*)``, the others are at
    most it, and the total is exact or the cap (the root administrator sees everything)."""
    from django.db.models import Count
    from djangorestframework_camel_case.util import underscoreize

    from spamhold import query
    from spamhold.api import serializers
    from spamhold.models import HeldMessage

    checker = serializers.QuerySerializer(
        data=underscoreize(body), context={"request": SimpleNamespace(user=admin)}
    )
    checker.is_valid(raise_exception=True)
    filters, path = serializers.QuerySerializer.to_filters(checker.validated_data)
    filters.pop("reason", None)
    matching = query.apply_filters(HeldMessage.objects.all(), filters, customer_path=path)
    truth = dict(matching.order_by().values_list("reason").annotate(n=Count("id")))
    everything = sum(truth.values())
    for row in answer["byReason"]:
        real = truth.get(row["reason"], 0)
        if row["exact"]:
            assert row["count"] == real, (body, row, real)
        else:
            assert row["count"] <= real, (body, row, real)
    assert answer["exact"] == (everything <= answer["cap"]), (body, answer, everything)
    assert answer["total"] == min(everything, answer["cap"]), (body, answer, everything)


def filter_bodies(args: argparse.Namespace) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every documented filter alone, with values drawn from the seeded data (rotated so
    one cached value does not flatter the figure); addresses sent in upper case since the
    match ignores case."""
    from django.db import connection

    rng = random.Random(args.seed + 2)
    with connection.cursor() as cursor:
        cursor.execute("SELECT sender FROM spamhold_heldmessage TABLESAMPLE SYSTEM (1) LIMIT 400")
        senders = [r[0] for r in cursor.fetchall()]
        # First recipients: each customer's inbox gets about 1 % of all held mail (hot).
        cursor.execute(
            "SELECT DISTINCT recipient FROM spamhold_heldmessage TABLESAMPLE SYSTEM (1) LIMIT 400"
        )
        firsts = [r[0] for r in cursor.fetchall()]
        cursor.execute(
            "SELECT DISTINCT recipients->>1 FROM spamhold_heldmessage TABLESAMPLE SYSTEM (1) "
            "WHERE jsonb_array_length(recipients) > 1 LIMIT 400"
        )
        laters = [r[0] for r in cursor.fetchall()]
    senders = rng.sample(senders, min(40, len(senders)))
    firsts = rng.sample(firsts, min(40, len(firsts)))
    laters = rng.sample(laters, min(40, len(laters)))
    customers = [rng.randrange(2, args.customers + 2) for _ in range(40)]
    stems = ["Offer", "Invoice", "Your order", "Meeting", "Re: project", "Password reset"]
    rare = [f"{rng.choice(stems).lower()} {rng.randrange(10007)} " for _ in range(40)]
    domains = [domain_name(rng.randrange(args.domains)) for _ in range(40)]
    return [
        ("status", [{"status": st} for st in ("EXPIRED", "RELEASED", "DELETED", "ONHOLD")]),
        ("reason", [{"reason": r} for r in ("virus", "attachment", "header", "spam")]),
        ("from_domain", [{"fromDomain": d} for d in domains]),
        ("to_domain", [{"toDomain": f"customer{c}.example"} for c in customers]),
        ("from_email", [{"fromEmail": a.upper()} for a in senders]),
        ("from_email_bulk", [{"fromEmail": "bulk@sender7.example"}]),
        ("to_email_first", [{"toEmail": a.upper()} for a in firsts]),
        ("to_email_later", [{"toEmail": a.upper()} for a in laters]),
        ("subject_rare", [{"subject": n} for n in rare]),
        ("subject_common", [{"subject": w} for w in ("URGENT", "weekly", "final", "cheap")]),
        ("subject_absent", [{"subject": f"zq{i}x"} for i in range(40)]),
        ("customer", [{"customer": c} for c in customers]),
        ("time_range", [{}]),
    ]  # fmt: skip


def time_window() -> tuple[float, float]:
    """Three days in the middle of the seeded month (about a tenth of the messages)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT extract(epoch FROM max(received_at)) FROM spamhold_heldmessage")
        newest = float(cursor.fetchone()[0])
    return newest - 10 * 86400, newest - 7 * 86400


def measure(args: argparse.Namespace, people: dict[str, Any]) -> list[dict[str, Any]]:
    rng = random.Random(args.seed + 1)
    root = client_for(people["root"]["token"])
    mid = client_for(people["mid"]["token"])
    sheet = {"startTime": 0, "endTime": 2147483647, "fromDomain": "gmail.com", "status": "ONHOLD"}
    domains = ["gmail.com"] + [domain_name(rng.randrange(1, args.domains)) for _ in range(39)]
    bodies = [{**sheet, "fromDomain": d} for d in domains]
    first = root.post(QUERY_URL, sheet, content_type="application/json").json()
    assert first["results"], "the sheet query found nothing"
    row = first["results"][0]
    assert set(row) == {
        "id", "timestamp", "status", "expiry", "fromDomain", "fromEmail", "toEmail", "subject",
        "pending",
    }, row  # fmt: skip
    # The next link is absolute (on UMS_BASE_URL); the test client wants the path.
    second_url = "/" + (first["next"] or "x://x" + QUERY_URL).split("://", 1)[1].split("/", 1)[1]
    cases: list[tuple[str, str, Any, str, str, list[dict | None], float | None]] = [
        ("sheet_query_first_page", "root", root, "post", QUERY_URL, bodies, QUERY_TARGET_MS),
        ("sheet_query_first_page_mid", "mid", mid, "post", QUERY_URL, bodies, None),
        ("sheet_query_second_page", "root", root, "post", second_url, [sheet], None),
        (
            "queue_onhold_first_page",
            "root",
            root,
            "get",
            "/api/v1/spamhold/messages/?status=ONHOLD",
            [None],
            None,
        ),
        ("counts_one_domain", "root", root, "post", COUNTS_URL, bodies, QUERY_TARGET_MS),
    ]
    if not args.skip_filters:
        start, end = time_window()
        window = {"startTime": start, "endTime": end}
        for name, filter_list in filter_bodies(args):
            for suffix, extra in (("", {}), ("+time", window)):
                if name == "time_range" and not suffix:
                    continue
                with_extra = [{**b, **extra} for b in filter_list]
                for endpoint, url in (("query", QUERY_URL), ("counts", COUNTS_URL)):
                    key = f"filter {name}{suffix} {endpoint}"
                    cases.append((key, "root", root, "post", url, with_extra, QUERY_TARGET_MS))
    for _key, _who, client, method, url, case_bodies, _target in cases:
        for i in range(args.warmup):
            timed(client, method, url, case_bodies[i % len(case_bodies)])
    samples: dict[str, tuple[list[float], list[float]]] = {c[0]: ([], []) for c in cases}
    # Interleaved, one request of each case per round (background load lands evenly).
    for i in range(args.requests):
        for key, _who, client, method, url, case_bodies, _target in cases:
            elapsed, cpu, _response = timed(client, method, url, case_bodies[i % len(case_bodies)])
            samples[key][0].append(elapsed)
            samples[key][1].append(cpu)
    results = []
    for _key, who, client, method, url, case_bodies, _target in cases:
        if url == COUNTS_URL and who == "root":
            for body in case_bodies[:3]:
                answer = timed(client, method, url, body)[2].json()
                check_counts(body, answer, people["root"]["admin"])
    for key, who, client, method, url, case_bodies, target in cases:
        queries, sql_text, settings = last_query_sql(client, method, url, case_bodies[0])
        wall, cpu = samples[key]
        row = {"key": key, "who": who, "target_p95_ms": target, **stats(wall)}
        cpu_stats = stats(cpu)
        row.update(
            cpu_p50=cpu_stats["p50"],
            cpu_p95=cpu_stats["p95"],
            passed=None if target is None else row["p95"] < target,
            requests=len(wall),
            url=url,
            body=case_bodies[0],
            queries=queries,
        )
        if sql_text:
            plan = explain_under(sql_text, settings)
            row.update(page_sql=sql_text, settings=settings, explain=plan, db_ms=execution_ms(plan))
        results.append(row)
    CPU.clear()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = database_url()
    wanted = sizes_of(args)
    have = seeded_sizes(url)
    seed_timings: dict[str, float] = {}
    if args.reseed or have != wanted:
        print(f"seeding {wanted} (was {have})", flush=True)
        recreate_database(url)
        setup_django()
        seed_timings = seed(args)
        print(f"seeded in {seed_timings['total']} s: {seed_timings}", flush=True)
    else:
        setup_django()
        print(f"database already seeded with {have}", flush=True)
    people = ensure_people()
    wait_quiet(args.wait_quiet)
    load_before = os.getloadavg()[0]
    results = measure(args, people)
    print()
    print(f"load average before timing: {load_before:.2f} on {os.cpu_count()} cores")
    print(
        f"{'case':38} {'who':4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'cpu p95':>8} "
        f"{'db ms':>7} {'queries':>7} {'target':>7}  ok"
    )
    for row in results:
        target = f"<{row['target_p95_ms']:.0f}" if row["target_p95_ms"] else "-"
        ok = {True: "yes", False: "NO", None: ""}[row["passed"]]
        print(
            f"{row['key']:38} {row['who']:4} {row['p50']:8.2f} {row['p95']:8.2f} "
            f"{row['p99']:8.2f} {row['cpu_p95']:8.2f} {row.get('db_ms') or 0:7.2f} "
            f"{row['queries']:7d} {target:>7}  {ok}"
        )
    report = {
        "issue": 6,
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_before_timing": load_before,
            "load_average_after": os.getloadavg()[0],
        },
        "sizes": wanted,
        "seed_timings_s": seed_timings,
        "results": results,
        "not_measured": [
            "release of 10,000 messages (real nodes; spam-hold backend)",
            "ingestion of 10,000 messages from a real node (spam-hold backend)",
        ],
        "passed": all(r["passed"] is not False for r in results),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.json}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
