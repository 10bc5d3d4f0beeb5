"""Where a benchmark phase's CPU went: the whole machine, and PostgreSQL's processes.

A throughput ratio on two shared cores says little without the CPU behind it: this reads
``/proc/stat`` (every core's busy and idle time) and the CPU of every process named
``postgres`` (live ones from ``/proc/<pid>/stat``, exited backends from the postmaster's
``cutime``/``cstime``, which the postmaster collects when it reaps them), so a phase can
be given as CPU per operation for the machine, for PostgreSQL, and what the cores left
idle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Reading:
    busy_s: float
    idle_s: float
    postgres_s: float


def _stat_fields(pid: str) -> tuple[str, list[str]] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # the process ended between the listing and the read
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    return name, text.rsplit(")", 1)[1].split()


def _postgres_seconds() -> float:
    """CPU of every ``postgres`` process, exited backends included (their postmaster's
    children time)."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        read = _stat_fields(pid)
        if read is None or read[0] != "postgres":
            continue
        fields = read[1]
        ticks += int(fields[11]) + int(fields[12])
        parent = _stat_fields(fields[1])
        if parent is None or parent[0] != "postgres":  # the postmaster: add reaped backends
            ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def read() -> Reading:
    """The machine's busy and idle CPU seconds so far (all cores) and PostgreSQL's CPU."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[:8])
    busy = user + nice + system + irq + softirq + steal
    return Reading(busy / TICKS, (idle + iowait) / TICKS, _postgres_seconds())


def per_operation(start: Reading, end: Reading, operations: int) -> dict[str, float]:
    """CPU ms per operation between two readings, and the idle share of the cores."""
    count = max(operations, 1)
    busy = end.busy_s - start.busy_s
    idle = end.idle_s - start.idle_s
    return {
        "machine_cpu_ms_per_op": round(busy * 1000 / count, 2),
        "postgres_cpu_ms_per_op": round((end.postgres_s - start.postgres_s) * 1000 / count, 2),
        "idle_share": round(idle / max(busy + idle, 1e-9), 3),
    }
