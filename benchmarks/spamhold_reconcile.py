"""Benchmark of issue 12, held mail: the reconciler's cost when nothing is pending.

Seeds ``--done`` (100,000) finished release/delete requests (``OutcomeIntent`` rows in
state ``done``, plus a few ``failed``) and ``--keys`` idempotency keys younger than a
day, then times ``spamhold.reconcile.outcomes()`` (what beat runs every
``UMS_RECONCILE_INTERVAL`` seconds) ``--passes`` times: **target < 50 ms per pass**
(p95). Each pass must find nothing to re-drive, else the benchmark fails. The plan of the
due-request query is printed: it must use the partial index ``spamhold_intent_pending``.

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_spamhold_reconcile \\
        .venv/bin/python benchmarks/spamhold_reconcile.py

The database name must contain "bench": the benchmark deletes every request in it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import bootstrap  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "spamhold_reconcile.json"
TARGET_MS = 50.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--done", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=200)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def seed(done: int, keys: int) -> None:
    from django.db import connection
    from django.utils import timezone

    from spamhold.models import IdempotencyKey, IntentState, OutcomeIntent
    from tenants import actions as tenant_actions
    from tenants.models import Administrator, Customer

    OutcomeIntent.objects.all().delete()
    IdempotencyKey.objects.all().delete()
    root = Customer.objects.filter(name="Bench Reconcile", parent=None).first()
    if root is None:
        root = tenant_actions.create_customer(actor=None, name="Bench Reconcile", parent=None)
    admin = Administrator.objects.filter(username="bench.reconcile").first()
    if admin is None:
        admin = tenant_actions.create_administrator(
            actor=None,
            customer=root,
            username="bench.reconcile",
            full_name="Bench Reconcile",
            email="bench.reconcile@provider.example",
            password="Bench-Reconcile-Password-1",
            permissions=[],
        )
    now = timezone.now()
    batch = []
    for i in range(done):
        state = IntentState.FAILED if i % 1000 == 0 else IntentState.DONE
        batch.append(
            OutcomeIntent(
                token=uuid.uuid4().hex,
                outcome="release" if i % 3 else "delete",
                state=state,
                customer_path=root.path,
                requested_by=admin,
                requested_by_name="Bench Reconcile",
                requested_at=now - datetime.timedelta(seconds=i),
                attempts=1,
                finished_at=now,
            )
        )
        if len(batch) == 5000:
            OutcomeIntent.objects.bulk_create(batch)
            batch = []
    OutcomeIntent.objects.bulk_create(batch)
    IdempotencyKey.objects.bulk_create(
        [
            IdempotencyKey(administrator=admin, key=f"k-{i}", request_hash="0" * 64)
            for i in range(keys)
        ],
        batch_size=5000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE spamhold_outcomeintent")
        cursor.execute("ANALYZE spamhold_idempotencykey")


def plan() -> str:
    from django.db.models import Q
    from django.utils import timezone

    from spamhold.models import PENDING_STATES, OutcomeIntent

    queryset = OutcomeIntent.objects.filter(
        Q(state__in=PENDING_STATES), next_attempt_at__lte=timezone.now()
    ).order_by("next_attempt_at")[:100]
    return queryset.explain()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = bootstrap.prepare(allow_any_database=False)
    from django.conf import settings

    from spamhold import reconcile

    seed(args.done, args.keys)
    reconcile.outcomes()  # warm the connection and caches
    samples = []
    for _ in range(args.passes):
        started = time.perf_counter()
        result = reconcile.outcomes()
        samples.append((time.perf_counter() - started) * 1000)
        if result["redriven"] or result["gaveUp"]:
            raise SystemExit(f"bench: FAILED: a pass found work: {result}")
    samples.sort()
    p50 = samples[len(samples) // 2]
    p95 = samples[int(len(samples) * 0.95) - 1]
    explained = plan()
    out = {
        "database": name,
        "python": platform.python_version(),
        "done_requests": args.done,
        "keys": args.keys,
        "passes": args.passes,
        "pass_ms_p50": round(p50, 3),
        "pass_ms_p95": round(p95, 3),
        "pass_ms_max": round(samples[-1], 3),
        "target_ms": TARGET_MS,
        "met": p95 < TARGET_MS,
        "plan": explained,
        "reconcile_interval_s": settings.UMS_RECONCILE_INTERVAL,
    }
    print(json.dumps(out, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    if "spamhold_intent_pending" not in explained:
        print("bench: the due-request query does not use the partial index", file=sys.stderr)
        return 1
    return 0 if out["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
