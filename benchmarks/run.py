"""Benchmark of issue 2: subtree customer pages and audit search, through the full stack.

``make bench`` runs this with ``DATABASE_URL`` pointing at the ``ums_bench`` PostgreSQL
database: it creates and migrates the database, seeds it (skipped when already seeded with
the same sizes), then times API requests in-process with Django's test client, which runs
every middleware, token authentication, DRF, django-filter and the camelCase renderer.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import bootstrap  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "issue2.json"
SUBTREE_TARGET_MS = 15.0
AUDIT_TARGET_MS = 100.0
AUDIT_COLD_MS = 50.0  # issue 19: actor search p95 at 5M records, cold cache included


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--levels", type=int, default=8, help="depth of the tree, in levels")
    parser.add_argument("--admins", type=int, default=500)
    parser.add_argument("--audit", type=int, default=1_000_000, help="audit records to seed")
    parser.add_argument("--seed", type=int, default=2, help="random seed of the generated data")
    parser.add_argument("--reseed", action="store_true", help="seed even if already seeded")
    parser.add_argument("--seed-only", action="store_true", help="seed, then stop")
    parser.add_argument(
        "--only",
        choices=["tenants", "audit"],
        help="measure one group (audit seeding is skipped with --only tenants)",
    )
    parser.add_argument("--requests", type=int, default=200, help="timed requests per case")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per case")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="print EXPLAIN ANALYZE of every page query, not only of misses",
    )
    parser.add_argument(
        "--wait-quiet",
        type=int,
        default=0,
        metavar="SECONDS",
        help="wait up to SECONDS for the load average to drop before timing",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument(
        "--allow-any-database",
        action="store_true",
        help="seed even when the database name does not contain 'bench'",
    )
    return parser.parse_args(argv)


def seed(args: argparse.Namespace) -> dict:
    from benchmarks import seed_audit, seed_tenants

    report: dict = {}
    started = time.perf_counter()
    tenants = seed_tenants.seed(
        customers=args.customers,
        admins=args.admins,
        levels=args.levels,
        seed=args.seed,
        force=args.reseed,
    )
    report["tenants_seconds"] = round(time.perf_counter() - started, 2)
    report["tenants"] = tenants
    state = "already seeded, skipped" if tenants["skipped"] else "seeded"
    print(
        f"tenants: {args.customers} customers in {args.levels} levels, {args.admins} "
        f"administrators: {state} ({report['tenants_seconds']} s)"
    )
    if args.only == "tenants":
        return report
    started = time.perf_counter()
    audit = seed_audit.seed(
        records=args.audit,
        tenants_generation=tenants["generation"],
        seed=args.seed,
        force=args.reseed or not tenants["skipped"],
        focus=tenants["mid_customer_path"],
    )
    report["audit_seconds"] = round(time.perf_counter() - started, 2)
    report["audit"] = audit
    state = "already seeded, skipped" if audit["skipped"] else "seeded"
    print(f"audit: {args.audit} records: {state} ({report['audit_seconds']} s)")
    if audit.get("timings"):
        steps = ", ".join(f"{k} {v} s" for k, v in audit["timings"].items())
        print(f"  {'last seeding' if audit['skipped'] else 'seeding'}: {steps}")
    return report


def make_token(username: str) -> str:
    from tenants import actions
    from tenants.models import Administrator
    from ums import context

    admin = Administrator.objects.select_related("customer").get(username=username)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    with context.acting(channel=context.CHANNEL_CLI, actor=admin):
        _token, full = actions.create_token(actor=admin, name=f"benchmark {stamp}", read_only=True)
    return full


def expect(
    *,
    count: int | None = None,
    path: str | None = None,
    parent: int | None = None,
    customers: set[int] | None = None,
    action: str | None = None,
):
    """A check of a page's JSON: how many rows, and what every row must satisfy."""

    def check(data: dict) -> str | None:
        rows = data.get("results")
        if not isinstance(rows, list):
            return f"no results list in {str(data)[:200]}"
        if count is not None and len(rows) != count:
            return f"expected {count} rows, got {len(rows)}"
        for row in rows:
            if path is not None and not row["path"].startswith(path):
                return f"customer {row['id']} ({row['path']}) is outside {path}"
            if parent is not None and row["parent"] != parent:
                return f"customer {row['id']} is not a child of {parent}"
            if customers is not None and row["customerId"] not in customers:
                return f"audit record {row['seq']} belongs to customer {row['customerId']}"
            if action is not None and not row["action"].startswith(action):
                return f"audit record {row['seq']} has action {row['action']}"
        return None

    return check


@dataclass
class Who:
    """An administrator the benchmark acts as, and the size of their world."""

    key: str  # "mid", "deep", "root"
    username: str
    customer_id: int
    path: str
    depth: int
    subtree: int  # customers in scope
    children: int


def pick_people(info: dict) -> dict[str, Who]:
    """The middle administrator (the target), the root, and one deep in the tree (context)."""
    from benchmarks.seed_tenants import MID_USERNAME, ROOT_USERNAME
    from tenants import permissions as perms
    from tenants.models import Administrator, Customer

    needed = {perms.CUSTOMERS_VIEW, perms.AUDIT_VIEW, perms.TOKENS_MANAGE}
    # Deep in the tree (depth 4 or more) yet with a little world of its own: the deepest
    # such administrator whose scope holds 5 to 60 customers.
    candidates = [
        a
        for a in Administrator.objects.select_related("customer")
        .filter(customer__depth__gte=4, is_active=True)
        .order_by("-customer__depth", "id")
        if needed <= a.permission_set() and a.customer.login_enabled()
    ]
    deep = next(
        (
            a.username
            for a in candidates
            if 5 <= Customer.objects.filter(path__startswith=a.customer_path).count() <= 60
        ),
        candidates[0].username if candidates else None,
    )
    people = {}
    for key, username in (("mid", MID_USERNAME), ("root", ROOT_USERNAME), ("deep", deep)):
        if username is None:
            continue
        admin = Administrator.objects.select_related("customer").get(username=username)
        home = admin.customer
        people[key] = Who(
            key,
            username,
            home.pk,
            home.path,
            home.depth,
            Customer.objects.filter(path__startswith=home.path).count(),
            Customer.objects.filter(parent=home).count(),
        )
    return people


def data_facts(info: dict, people: dict[str, Who], groups: set[str]) -> dict:
    """Sizes that explain the figures: scopes, word and action frequencies, table sizes."""
    from django.db import connection

    from benchmarks.seed_audit import ACTION_FILTER, COMMON_WORD, RARE_ACTION, RARE_WORD

    facts: dict = {
        "customers_per_depth": info["tenants"]["depth_counts"],
        "max_fanout": info["tenants"]["max_fanout"],
    }
    for who in people.values():
        facts[f"{who.key} admin"] = (
            f"{who.username} at customer #{who.customer_id} (depth {who.depth}, "
            f"{who.subtree} customers in scope, {who.children} children)"
        )
    if "audit" not in groups:
        return facts
    words = "search_vector @@ plainto_tsquery('simple', %s)"
    counts = {
        "audit records": ("true", []),
        f"'{COMMON_WORD}'": (words, [COMMON_WORD]),
        f"'{RARE_WORD}'": (words, [RARE_WORD]),
        f"action {ACTION_FILTER}": ("action = %s", [ACTION_FILTER]),
        f"action {RARE_ACTION}": ("action = %s", [RARE_ACTION]),
    }
    with connection.cursor() as cursor:
        for who in people.values():
            for label, (where, params) in counts.items():
                cursor.execute(
                    f"SELECT count(*) FROM audit_auditrecord WHERE {where} "  # noqa: S608
                    "AND customer_path LIKE %s",
                    [*params, who.path + "%"],
                )
                facts[f"{who.key}: {label}"] = cursor.fetchone()[0]
        for who in people.values():
            facts[f"{who.key}: actors"] = actor_facts(cursor, who.path)
        cursor.execute(
            "SELECT pg_size_pretty(pg_table_size('audit_auditrecord')), "
            "pg_size_pretty(pg_indexes_size('audit_auditrecord'))"
        )
        facts["audit table size"], facts["audit indexes size"] = cursor.fetchone()
    return facts


def actor_facts(cursor, path: str) -> dict:
    """The actors of a scope's records: the most and least frequent, and every name (for
    the cold pass). A needle is the ``<username>`` part of a name, so it matches that
    actor only and the expected row count is exact."""
    cursor.execute(
        "SELECT actor_name, max(actor_id), count(*) FROM audit_auditrecord "
        "WHERE customer_path LIKE %s AND actor_name LIKE '%%<%%>' "
        "GROUP BY actor_name ORDER BY count(*) DESC, actor_name",
        [path + "%"],
    )
    rows = [(name, actor_id, n) for name, actor_id, n in cursor.fetchall()]
    if not rows:
        return {"names": []}

    def needle(name: str) -> str:
        return "<" + name.rsplit("<", 1)[1].upper()

    (top, top_id, top_n), (rare, _rare_id, rare_n) = rows[0], rows[-1]
    return {
        "frequent": {"needle": needle(top), "id": top_id, "records": top_n},
        "rare": {"needle": needle(rare), "records": rare_n},
        "names": [needle(name) for name, _id, _n in rows],
        "distinct": len(rows),
    }


def cold_actor_pass(client, actors: dict) -> dict | None:
    """Every actor of the scope searched once, never repeated: each request touches index
    and heap pages no earlier request of the pass did (PostgreSQL's 128 MB of shared
    buffers hold a sliver of the table; the OS page cache is not dropped, it is shared)."""
    from benchmarks.measure import summary, timed_get

    names = actors.get("names") or []
    if not names:
        return None
    walls = []
    for needle in names:
        wall, _cpu, response = timed_get(client, f"/api/v1/audit/?{urlencode({'actor': needle})}")
        if response.status_code != 200 or not response.json()["results"]:
            raise RuntimeError(f"cold actor pass: {needle} answered {response.status_code}")
        walls.append(wall)
    return {"requests": len(walls), "target_p95_ms": AUDIT_COLD_MS, **summary(walls)}


def scenarios(people: dict[str, Who], facts: dict, only: str | None) -> list:
    from benchmarks.measure import Scenario
    from benchmarks.seed_audit import ACTION_FILTER, COMMON_WORD, RARE_ACTION, RARE_WORD
    from tenants.models import Customer

    page = 50
    c, a = "tenants_customer", "audit_auditrecord"
    mid = people["mid"]
    # The root's biggest direct child: a large subtree seen from the top, for context.
    big_id, big_path = max(
        Customer.objects.filter(depth=1).values_list("id", "path"),
        key=lambda row: Customer.objects.filter(path__startswith=row[1]).count(),
    )
    cases = [
        Scenario(
            "customers subtree",
            "tenants",
            "mid",
            f"/api/v1/customers/?subtreeOf={mid.customer_id}&pageSize={page}",
            c,
            SUBTREE_TARGET_MS,
            "first page of the admin's own subtree",
            expect(count=min(page, mid.subtree), path=mid.path),
        ),
        Scenario(
            "customers list",
            "tenants",
            "mid",
            f"/api/v1/customers/?pageSize={page}",
            c,
            SUBTREE_TARGET_MS,
            "first page, no filter (scope only)",
            expect(count=min(page, mid.subtree), path=mid.path),
        ),
        Scenario(
            "customers children",
            "tenants",
            "mid",
            f"/api/v1/customers/{mid.customer_id}/children/?pageSize={page}",
            c,
            None,
            "tree browser: children of the home customer",
            expect(count=min(page, mid.children), parent=mid.customer_id),
        ),
        Scenario(
            "customers list",
            "tenants",
            "root",
            f"/api/v1/customers/?pageSize={page}",
            c,
            None,
            "whole tree",
            expect(count=page),
        ),
        Scenario(
            "customers subtree",
            "tenants",
            "root",
            f"/api/v1/customers/?subtreeOf={mid.customer_id}&pageSize={page}",
            c,
            None,
            "the middle subtree, seen from the root",
            expect(count=min(page, mid.subtree), path=mid.path),
        ),
        Scenario(
            "customers subtree big",
            "tenants",
            "root",
            f"/api/v1/customers/?subtreeOf={big_id}&pageSize={page}",
            c,
            None,
            "largest depth-1 subtree",
            expect(count=page, path=big_path),
        ),
    ]
    if "deep" in people:
        deep = people["deep"]
        cases.append(
            Scenario(
                "customers list",
                "tenants",
                "deep",
                f"/api/v1/customers/?pageSize={page}",
                c,
                None,
                "a small subtree deep in the tree",
                expect(count=min(page, deep.subtree), path=deep.path),
            )
        )
    if only != "tenants":
        in_scope = {
            who.key: set(
                Customer.objects.filter(path__startswith=who.path).values_list("id", flat=True)
            )
            for who in people.values()
            if who.key != "root"
        }
        for who in people.values():
            target = AUDIT_TARGET_MS if who.key == "mid" else None
            scope = in_scope.get(who.key)
            note = {"mid": "", "root": "whole log, ", "deep": "small subtree, "}[who.key]

            def rows(label: str, who: Who = who) -> int:
                return min(page, facts[f"{who.key}: {label}"])

            cases += [
                Scenario(
                    "audit q common",
                    "audit",
                    who.key,
                    f"/api/v1/audit/?q={COMMON_WORD}&pageSize={page}",
                    a,
                    target,
                    f"{note}full text, common word '{COMMON_WORD}'",
                    expect(count=rows(f"'{COMMON_WORD}'"), customers=scope),
                ),
                Scenario(
                    "audit q rare",
                    "audit",
                    who.key,
                    f"/api/v1/audit/?q={RARE_WORD}&pageSize={page}",
                    a,
                    target,
                    f"{note}full text, rare word '{RARE_WORD}'",
                    expect(count=rows(f"'{RARE_WORD}'"), customers=scope),
                ),
                Scenario(
                    "audit action",
                    "audit",
                    who.key,
                    f"/api/v1/audit/?action={ACTION_FILTER}&pageSize={page}",
                    a,
                    target,
                    f"{note}action={ACTION_FILTER}",
                    expect(
                        count=rows(f"action {ACTION_FILTER}"), customers=scope, action=ACTION_FILTER
                    ),
                ),
                Scenario(
                    "audit action rare",
                    "audit",
                    who.key,
                    f"/api/v1/audit/?action={RARE_ACTION}&pageSize={page}",
                    a,
                    target,
                    f"{note}action={RARE_ACTION} (0.3% of records)",
                    expect(
                        count=rows(f"action {RARE_ACTION}"), customers=scope, action=RARE_ACTION
                    ),
                ),
            ]
            actors = facts[f"{who.key}: actors"]
            actor_target = AUDIT_COLD_MS if who.key == "mid" else None
            if actors.get("frequent"):
                top, rare = actors["frequent"], actors["rare"]
                cases += [
                    Scenario(
                        "audit actor frequent",
                        "audit",
                        who.key,
                        f"/api/v1/audit/?{urlencode({'actor': top['needle']})}&pageSize={page}",
                        a,
                        actor_target,
                        f"{note}actor name substring, {top['records']} records",
                        expect(count=min(page, top["records"]), customers=scope),
                    ),
                    Scenario(
                        "audit actor rare",
                        "audit",
                        who.key,
                        f"/api/v1/audit/?{urlencode({'actor': rare['needle']})}&pageSize={page}",
                        a,
                        actor_target,
                        f"{note}actor name substring, {rare['records']} records",
                        expect(count=min(page, rare["records"]), customers=scope),
                    ),
                    Scenario(
                        "audit actor id",
                        "audit",
                        who.key,
                        f"/api/v1/audit/?actor={top['id']}&pageSize={page}",
                        a,
                        actor_target,
                        f"{note}actor id of the most frequent actor",
                        expect(customers=scope),
                    ),
                    Scenario(
                        "audit actor absent",
                        "audit",
                        who.key,
                        f"/api/v1/audit/?actor=nobody-zq&pageSize={page}",
                        a,
                        actor_target,
                        f"{note}actor name substring matching nothing",
                        expect(count=0),
                    ),
                ]
            cases += [
                Scenario(
                    "audit latest",
                    "audit",
                    who.key,
                    f"/api/v1/audit/?pageSize={page}",
                    a,
                    target,
                    f"{note}no filter (scope only)",
                    expect(count=rows("audit records"), customers=scope),
                ),
            ]
    return [s for s in cases if only is None or s.group == only]


def environment() -> dict:
    import django
    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
        pg = {"server_version": version}
        for name in (
            "shared_buffers",
            "work_mem",
            "effective_cache_size",
            "random_page_cost",
            "jit",
        ):
            cursor.execute(f"SHOW {name}")
            pg[name] = cursor.fetchone()[0]
    return {
        "python": platform.python_version(),
        "django": django.get_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "debug": settings.DEBUG,
        "conn_max_age": settings.DATABASES["default"].get("CONN_MAX_AGE"),
        "postgresql": pg,
    }


def print_table(results: list) -> None:
    header = (
        f"{'case':<22} {'as':<4} {'min':>5} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6} "
        f"{'cpu50':>6} {'db':>6} {'target':>6} {'':<4} {'rows':>4} {'sql':>3}  note"
    )
    print()
    print(
        "Milliseconds per request through the full stack, in-process (nearest-rank "
        "percentiles; cpu50 = median CPU time of this Python process)"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        s = r.stats()
        target = f"<{r.scenario.target_ms:g}" if r.scenario.target_ms else "-"
        verdict = {True: "ok", False: "MISS", None: ""}[r.passed]
        db = f"{r.db_ms:.2f}" if r.db_ms is not None else "-"
        print(
            f"{r.scenario.key:<22} {r.scenario.who:<4} {s['min']:>5.1f} {s['p50']:>6.1f} "
            f"{s['p95']:>6.1f} {s['p99']:>6.1f} {s['max']:>6.1f} {s['cpu_p50']:>6.1f} {db:>6} "
            f"{target:>6} {verdict:<4} {r.results:>4} {len(r.queries):>3}  {r.scenario.note}"
        )


def wait_for_quiet(seconds: int) -> None:
    """Wait (up to ``seconds``) until the 1-minute load average drops to the CPU count."""
    from benchmarks.measure import load_average

    cpus = os.cpu_count() or 1
    deadline = time.monotonic() + seconds
    load = load_average()
    while load is not None and load > cpus and time.monotonic() < deadline:
        print(f"  load average {load} > {cpus} CPUs, waiting for a quieter machine...")
        time.sleep(15)
        load = load_average()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    database = bootstrap.prepare(allow_any_database=args.allow_any_database)

    from benchmarks import measure, seed_audit

    run_started = time.perf_counter()
    seeded = seed(args)
    if args.seed_only:
        return 0
    groups = {args.only} if args.only else {"tenants", "audit"}
    info = {"tenants": seeded["tenants"]}
    people = pick_people(info)
    facts = data_facts(info, people, groups)
    cases = scenarios(people, facts, args.only)
    clients = {key: measure.api_client(make_token(who.username)) for key, who in people.items()}
    for who in people.values():
        print(f"  {who.key}: {facts[f'{who.key} admin']}")
    print(
        f"measuring {len(cases)} cases, {args.warmup} warm-up + {args.requests} timed "
        "requests each, interleaved"
    )
    if args.wait_quiet:
        wait_for_quiet(args.wait_quiet)
    load_before = measure.load_average()
    measure_started = time.perf_counter()
    results = measure.run_all(clients, cases, requests=args.requests, warmup=args.warmup)
    measure_seconds = round(time.perf_counter() - measure_started, 1)
    load_after = measure.load_average()
    for result in results:
        # The page query's own cost on the server separates plan problems from stack cost.
        sql = measure.page_query(result)
        if sql:
            result.explain, result.db_ms = measure.explain(sql)

    print_table(results)
    print()
    print("Data: " + "; ".join(f"{k} {v}" for k, v in facts.items() if "actors" not in k))
    for key, value in facts.items():
        if "actors" in key and value.get("frequent"):
            print(
                f"{key}: {value['distinct']} distinct, most frequent {value['frequent']}, "
                f"least {value['rare']}"
            )
    cold = {}
    if "audit" in groups:
        for who in people.values():
            cold[who.key] = cold_actor_pass(clients[who.key], facts[f"{who.key}: actors"])
            if cold[who.key]:
                print(f"cold actor pass ({who.key}): {cold[who.key]}")
    cpus = os.cpu_count()
    print(
        f"Load average (1 min) {load_before} before, {load_after} after measuring, on "
        f"{cpus} CPUs; measuring took {measure_seconds} s."
    )
    if max(load_before or 0, load_after or 0) > (cpus or 1):
        print(
            "WARNING: the machine was busy with other work; wall-clock figures are inflated. "
            "Compare cpu50 and the SQL times, or rerun with --wait-quiet 600."
        )
    for r in results:
        if r.explain and (args.explain or r.passed is False):
            flag = "missed its target" if r.passed is False else "explained on request"
            print(f"\n=== {r.scenario.key} ({r.scenario.who}) {flag}: {r.scenario.url}")
            print("SQL per request (ms): " + ", ".join(f"{q['ms']:g}" for q in r.queries))
            print(measure.page_query(r))
            print(r.explain)
    missed = [r for r in results if r.passed is False]
    cold_missed = [k for k, c in cold.items() if c and k == "mid" and c["p95"] > AUDIT_COLD_MS]

    output = {
        "issue": 2,
        "command": "make bench" + (f" BENCH_ARGS='{' '.join(argv)}'" if argv else ""),
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "database": database,
        "sizes": {
            "customers": args.customers,
            "levels": args.levels,
            "administrators": args.admins,
            "audit_records": args.audit,
        },
        "requests_per_case": args.requests,
        "warmup_per_case": args.warmup,
        "seeding": {
            "tenants_seconds": seeded.get("tenants_seconds"),
            "tenants_skipped": seeded["tenants"]["skipped"],
            "audit_seconds": seeded.get("audit_seconds"),
            "audit_skipped": seeded.get("audit", {}).get("skipped"),
            # Of the run that seeded the records (this one unless audit_skipped).
            "audit_seeding_timings": seeded.get("audit", {}).get("timings"),
        },
        "environment": {
            **environment(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "measure_seconds": measure_seconds,
        },
        "data": facts,
        "cold_actor_pass": cold,
        "words": {"common": seed_audit.COMMON_WORD, "rare": seed_audit.RARE_WORD},
        "targets_ms": {
            "customers subtree p95": SUBTREE_TARGET_MS,
            "audit search p95": AUDIT_TARGET_MS,
        },
        "results": [r.as_dict() for r in results],
        "missed": [f"{r.scenario.key} ({r.scenario.who})" for r in missed]
        + [f"cold actor pass ({k})" for k in cold_missed],
        "total_seconds": round(time.perf_counter() - run_started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(output, indent=2, default=str) + "\n")
    print(f"\nwrote {args.json}")
    if output["missed"]:
        print("targets missed: " + ", ".join(output["missed"]))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
