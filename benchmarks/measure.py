"""Timing requests through the whole Django/DRF stack in-process, and explaining their SQL."""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

LIMIT = re.compile(r"LIMIT (\d+)")
EXECUTION_TIME = re.compile(r"Execution Time: ([0-9.]+) ms")


@dataclass
class Scenario:
    key: str
    group: str  # "tenants" or "audit", for --only
    who: str  # which benchmark administrator asks: "mid" or "root"
    url: str
    table: str  # the table of the page query, to pick it out for EXPLAIN
    target_ms: float | None = None  # p95 target; None: context only
    note: str = ""
    # Checks the JSON body of the page; returns a problem or None. Keeps the benchmark
    # honest: a filter silently ignored would make a page fast and wrong.
    check: Callable[[dict], str | None] | None = None


@dataclass
class Result:
    scenario: Scenario
    samples_ms: list[float]
    cpu_ms: list[float]
    status: int
    results: int
    has_next: bool
    body_bytes: int
    queries: list[dict[str, Any]] = field(default_factory=list)
    explain: str | None = None
    db_ms: float | None = None  # server execution time of the page query (EXPLAIN ANALYZE)

    def stats(self) -> dict[str, float]:
        cpu = summary(self.cpu_ms)
        return {
            **summary(self.samples_ms),
            "cpu_min": cpu["min"],
            "cpu_p50": cpu["p50"],
            "cpu_p95": cpu["p95"],
        }

    @property
    def passed(self) -> bool | None:
        if self.scenario.target_ms is None:
            return None
        return self.stats()["p95"] < self.scenario.target_ms

    def as_dict(self) -> dict[str, Any]:
        s = self.scenario
        return {
            "key": s.key,
            "group": s.group,
            "who": s.who,
            "url": s.url,
            "note": s.note,
            "target_p95_ms": s.target_ms,
            "passed": self.passed,
            "requests": len(self.samples_ms),
            **self.stats(),
            "status": self.status,
            "results_on_page": self.results,
            "has_next_page": self.has_next,
            "body_bytes": self.body_bytes,
            "queries_per_request": len(self.queries),
            "queries": self.queries,
            "page_query_db_ms": self.db_ms,
            "page_query": page_query(self),
            "explain": self.explain,
        }


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "min": round(ordered[0], 2) if ordered else math.nan,
        "p50": round(percentile(ordered, 50), 2),
        "p95": round(percentile(ordered, 95), 2),
        "p99": round(percentile(ordered, 99), 2),
        "max": round(ordered[-1], 2) if ordered else math.nan,
        "mean": round(sum(ordered) / len(ordered), 2) if ordered else math.nan,
    }


def api_client(token: str) -> Client:
    # 127.0.0.1 is in ALLOWED_HOSTS by default; the token authenticates like a script would.
    return Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {token}")


def timed_get(client: Client, url: str) -> tuple[float, float, Any]:
    """(wall ms, this process's CPU ms, response) of one request."""
    cpu = time.process_time()
    started = time.perf_counter()
    response = client.get(url)
    wall = (time.perf_counter() - started) * 1000
    return wall, (time.process_time() - cpu) * 1000, response


def fail(scenario: Scenario, response: Any) -> RuntimeError:
    return RuntimeError(
        f"{scenario.key} ({scenario.who}): {scenario.url} answered {response.status_code}: "
        f"{response.content[:500]!r}"
    )


def run_all(
    clients: dict[str, Client], cases: list[Scenario], *, requests: int, warmup: int
) -> list[Result]:
    """Warm every case up, then time them interleaved, one request of each per round.

    Interleaving spreads any background load on a shared machine evenly over the cases
    instead of letting it land on whichever case happened to run at that moment.
    """
    for scenario in cases:
        for _ in range(warmup):
            response = clients[scenario.who].get(scenario.url)
            if response.status_code != 200:
                raise fail(scenario, response)
    walls: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    cpus: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    for _ in range(requests):
        for i, scenario in enumerate(cases):
            wall, cpu, response = timed_get(clients[scenario.who], scenario.url)
            if response.status_code != 200:
                raise fail(scenario, response)
            walls[i].append(wall)
            cpus[i].append(cpu)
    return [inspect(clients[s.who], s, walls[i], cpus[i]) for i, s in enumerate(cases)]


def inspect(client: Client, scenario: Scenario, walls: list[float], cpus: list[float]) -> Result:
    """One more request, outside the timed loop, with its SQL captured and its body checked."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(scenario.url)
    if response.status_code != 200:
        raise fail(scenario, response)
    data = response.json()
    problem = scenario.check(data) if scenario.check else None
    if problem:
        raise RuntimeError(f"{scenario.key} ({scenario.who}): {scenario.url}: {problem}")
    return Result(
        scenario=scenario,
        samples_ms=walls,
        cpu_ms=cpus,
        status=response.status_code,
        results=len(data.get("results", [])),
        has_next=bool(data.get("next")),
        body_bytes=len(response.content),
        queries=[
            {"ms": round(float(q["time"]) * 1000, 3), "sql": q["sql"]}
            for q in captured.captured_queries
        ],
    )


def page_query(result: Result) -> str | None:
    """The SQL of the page itself: the last query on the case's table fetching many rows."""
    table = f'FROM "{result.scenario.table}"'
    candidates = [
        q["sql"]
        for q in result.queries
        if table in q["sql"] and int((LIMIT.findall(q["sql"]) or ["0"])[-1]) > 1
    ]
    return candidates[-1] if candidates else None


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def explain(sql: str) -> tuple[str, float | None]:
    """EXPLAIN ANALYZE text of a query and its execution time on the server (ms)."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, SETTINGS) {sql}")
        text = "\n".join(row[0] for row in cursor.fetchall())
    found = EXECUTION_TIME.search(text)
    return text, float(found.group(1)) if found else None
