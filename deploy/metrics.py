"""Metric collection: one constant SSH command per node, parsed on the controller.

The command is fixed text (no user data), so running it through ``sh -c`` is safe; it
prints /proc/stat's CPU line, meminfo, loadavg, uptime, ``df``, /proc/diskstats,
/proc/net/dev and the names of the physical disks in sections. Disk operations and network
bytes are cumulative counters: like CPU use, their rates (IOPS, Mbit/s) come from two
consecutive samples, and feed the capacity comparison of each zone (deploy.capacity).
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

from . import persistent
from .connector.base import ConnectorError
from .nodes import NodeUnavailable

SEPARATOR = "--ums--"
METRICS_SCRIPT = (
    f"head -n 1 /proc/stat; echo {SEPARATOR}; cat /proc/meminfo; echo {SEPARATOR}; "
    f"cat /proc/loadavg; echo {SEPARATOR}; cat /proc/uptime; echo {SEPARATOR}; "
    "df -P -k -x tmpfs -x devtmpfs -x overlay -x squashfs 2>/dev/null || true; "
    f"echo {SEPARATOR}; cat /proc/diskstats 2>/dev/null; echo {SEPARATOR}; "
    f"cat /proc/net/dev 2>/dev/null; echo {SEPARATOR}; "
    # Only whole physical disks (they have a device link): partitions, device-mapper and
    # md devices sit on top of them and would count the same operations twice.
    'for d in /sys/block/*; do [ -e "$d/device" ] && echo "${d##*/}"; done; true'
)
METRICS_ARGV = ["sh", "-c", METRICS_SCRIPT]


class MetricsParseError(ValueError):
    pass


def parse(output: str, at: datetime.datetime) -> MetricSample:
    parts = output.split(SEPARATOR)
    if len(parts) != 8:
        raise MetricsParseError("unexpected metrics output")
    stat, meminfo, loadavg, uptime, df, diskstats, netdev, physical = (p.strip() for p in parts)
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
        disk_ios_total=disk_operations(diskstats, set(physical.split())),
        net_bytes_total=network_bytes(netdev),
    )


def disk_operations(diskstats: str, physical: set[str]) -> int | None:
    """Reads plus writes completed on the physical disks since boot (None if none seen)."""
    total, seen = 0, False
    for line in diskstats.splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[2] in physical:
            total += int(fields[3]) + int(fields[7])
            seen = True
    return total if seen else None


def network_bytes(netdev: str) -> int | None:
    """Bytes received plus sent on every interface but loopback since boot."""
    total, seen = 0, False
    for line in netdev.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or name.strip() == "lo" or len(fields) < 9:
            continue
        total += int(fields[0]) + int(fields[8])
        seen = True
    return total if seen else None


def counter_rate(
    previous: MetricSample | None, current: MetricSample, field: str, scale: float = 1.0
) -> float | None:
    """Per-second rate of a cumulative counter between two samples; None across a reboot
    (the counter went backwards) or without a previous value."""
    if previous is None:
        return None
    before, after = getattr(previous, field), getattr(current, field)
    seconds = (current.at - previous.at).total_seconds()
    if before is None or after is None or seconds <= 0 or after < before:
        return None
    return round((after - before) * scale / seconds, 1)


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
        try:
            return _run_collection(node)
        except ConnectorError as exc:
            if not getattr(exc, "on_kept_connection", False):
                raise
            # A kept connection that died while idle (a node reboot) is no missed
            # collection: once more on a fresh one.
            return _run_collection(node)
    except (ConnectorError, MetricsParseError, ValueError) as exc:
        return Outcome(node, error=f"{type(exc).__name__}: {exc}")
    finally:
        # Threads get their own database connections; close them when the thread is done.
        connections.close_all()


def _run_collection(node: Node) -> Outcome:
    with persistent.session(node) as (conn, reused):
        try:
            result = conn.run(METRICS_ARGV, timeout=20)
        except ConnectorError as exc:
            exc.on_kept_connection = reused
            raise
    if not result.ok:
        return Outcome(node, error=result.stderr.strip()[:300] or f"exit {result.exit_code}")
    return Outcome(node, sample=parse(result.stdout, timezone.now()))


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
    # Kept connections of nodes that are no longer swept are closed now.
    persistent.POOL.close_except(persistent.key_of(node) for node in nodes)
    latest = _latest_samples([o.node.pk for o in outcomes if o.sample is not None])
    counts = {"collected": 0, "missed": 0}
    for outcome in outcomes:
        if outcome.sample is not None:
            previous = latest.get(outcome.node.pk)
            outcome.sample.cpu_percent = cpu_percent(previous, outcome.sample)
            outcome.sample.disk_iops = counter_rate(previous, outcome.sample, "disk_ios_total")
            outcome.sample.net_mbit = counter_rate(
                previous, outcome.sample, "net_bytes_total", scale=8 / 1_000_000
            )
            server_actions.record_metrics(outcome.node, outcome.sample)
            counts["collected"] += 1
        elif "NodeUnavailable" in outcome.error or "HostKeyMismatch" in outcome.error:
            counts["missed"] += 1
        else:
            server_actions.record_missed_collection(outcome.node, outcome.error)
            counts["missed"] += 1
    return counts


__all__ = ["METRICS_ARGV", "NodeUnavailable", "cpu_percent", "parse", "sweep"]
