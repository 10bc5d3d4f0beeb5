"""Metric collection: one constant SSH command per node, parsed on the controller.

The command is fixed text (no user data), so running it through ``sh -c`` is safe; it
prints /proc/stat's CPU line, meminfo, loadavg, uptime and ``df`` in sections.
"""

from __future__ import annotations

import datetime
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from servers import actions as server_actions
from servers.choices import REACHABLE_STATUSES
from servers.models import MetricSample, Node

from .connector.base import ConnectorError
from .nodes import NodeUnavailable, session

SEPARATOR = "--ums--"
METRICS_SCRIPT = (
    f"head -n 1 /proc/stat; echo {SEPARATOR}; cat /proc/meminfo; echo {SEPARATOR}; "
    f"cat /proc/loadavg; echo {SEPARATOR}; cat /proc/uptime; echo {SEPARATOR}; "
    "df -P -k -x tmpfs -x devtmpfs -x overlay -x squashfs 2>/dev/null || true"
)
METRICS_ARGV = ["sh", "-c", METRICS_SCRIPT]


class MetricsParseError(ValueError):
    pass


def parse(output: str, at: datetime.datetime) -> MetricSample:
    parts = output.split(SEPARATOR)
    if len(parts) != 5:
        raise MetricsParseError("unexpected metrics output")
    stat, meminfo, loadavg, uptime, df = (p.strip() for p in parts)
    ticks = [int(v) for v in stat.split()[1:]]
    if len(ticks) < 4:
        raise MetricsParseError("unexpected /proc/stat line")
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    memory = {}
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        value = rest.strip().split()
        if value:
            memory[name] = int(value[0])
    disks = []
    for line in df.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 6 and fields[1].isdigit():
            disks.append(
                {
                    "mount": fields[5],
                    "filesystem": fields[0][:100],
                    "size_kb": int(fields[1]),
                    "used_kb": int(fields[2]),
                }
            )
    return MetricSample(
        at=at,
        cpu_total_ticks=sum(ticks),
        cpu_idle_ticks=idle,
        load1=float(loadavg.split()[0]),
        memory_total_kb=memory.get("MemTotal"),
        memory_available_kb=memory.get("MemAvailable", memory.get("MemFree")),
        disks=disks[:50],
        uptime_seconds=float(uptime.split()[0]),
    )


def cpu_percent(previous: MetricSample | None, current: MetricSample) -> float | None:
    """CPU use between two samples from /proc/stat counters (None for the first sample)."""
    if previous is None or previous.cpu_total_ticks is None or current.cpu_total_ticks is None:
        return None
    total = current.cpu_total_ticks - previous.cpu_total_ticks
    idle = current.cpu_idle_ticks - previous.cpu_idle_ticks
    if total <= 0:
        return None
    return round(100.0 * (total - idle) / total, 1)


@dataclass
class Outcome:
    node: Node
    sample: MetricSample | None = None
    error: str = ""


def _collect_one(node: Node) -> Outcome:
    try:
        with session(node) as conn:
            result = conn.run(METRICS_ARGV, timeout=20)
        if not result.ok:
            return Outcome(node, error=result.stderr.strip()[:300] or f"exit {result.exit_code}")
        return Outcome(node, sample=parse(result.stdout, timezone.now()))
    except (ConnectorError, MetricsParseError, ValueError) as exc:
        return Outcome(node, error=f"{type(exc).__name__}: {exc}")
    finally:
        # Threads get their own database connections; close them when the thread is done.
        connections.close_all()


def _latest_samples(node_ids: list[int]) -> dict[int, MetricSample]:
    """The newest raw sample of each node, in one query (``DISTINCT ON``)."""
    raw = MetricSample.objects.filter(node_id__in=node_ids, resolution=MetricSample.RAW)
    rows = raw.order_by("node_id", "-at").distinct("node_id")
    return {s.node_id: s for s in rows}


def sweep(nodes: list[Node] | None = None, *, concurrency: int | None = None) -> dict[str, int]:
    """Collect from every reachable node with bounded concurrency; store in one pass."""
    close_old_connections()
    if nodes is None:
        nodes = list(
            Node.objects.filter(status__in=REACHABLE_STATUSES, host_key_alert="").exclude(
                pinned_host_keys=[]
            )
        )
    workers = max(1, min(concurrency or settings.UMS_METRICS_CONCURRENCY, len(nodes) or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(_collect_one, nodes))
    latest = _latest_samples([o.node.pk for o in outcomes if o.sample is not None])
    counts = {"collected": 0, "missed": 0}
    for outcome in outcomes:
        if outcome.sample is not None:
            outcome.sample.cpu_percent = cpu_percent(latest.get(outcome.node.pk), outcome.sample)
            server_actions.record_metrics(outcome.node, outcome.sample)
            counts["collected"] += 1
        elif "NodeUnavailable" in outcome.error or "HostKeyMismatch" in outcome.error:
            counts["missed"] += 1
        else:
            server_actions.record_missed_collection(outcome.node, outcome.error)
            counts["missed"] += 1
    return counts


__all__ = ["METRICS_ARGV", "NodeUnavailable", "cpu_percent", "parse", "sweep"]
