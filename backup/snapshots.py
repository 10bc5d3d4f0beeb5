"""ZFS snapshots of the per-domain mail datasets: naming, what is due, what to prune,
and the node commands (argument lists) that read, take and destroy them.

Names say their tier and the period they stand for, in UTC: ``ums-hourly-20261207T0600Z``,
``ums-daily-20261207T0000Z``, ``ums-monthly-20261201T0000Z``; on-demand ones are
``ums-manual-20261207T065512Z``. A tier is due when the snapshot of the current period is
missing, so taking one twice is impossible (the name exists) and a job run again after a
dead worker takes only what is still missing. Retention keeps the newest N of each
scheduled tier; on-demand snapshots are kept ``manual_keep_days`` days (by the time in
their name). Only names of this pattern are ever destroyed.

Sizes and times come from ``zfs get -Hp``: zfs-fuse 0.7 has no ``zfs list -p`` (see
``deploy/services/zfs``), and the same command serves OpenZFS.
"""

from __future__ import annotations

import datetime
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from deploy.connector.base import Connector

NAME_RE = re.compile(r"^ums-(hourly|daily|monthly|manual)-(\d{8}T\d{4}(?:\d{2})?Z)$")
SCHEDULED = ("hourly", "daily", "monthly")
_FORMATS = {"hourly": "%Y%m%dT%H00Z", "daily": "%Y%m%dT0000Z", "monthly": "%Y%m01T0000Z"}


class SnapshotError(Exception):
    """A ``zfs`` command failed; the message carries its output."""


@dataclass(frozen=True)
class SnapshotInfo:
    dataset: str
    name: str
    tier: str
    created: datetime.datetime
    used: int
    referenced: int


def period_name(tier: str, now: datetime.datetime) -> str:
    now = now.astimezone(datetime.UTC)
    if tier == "manual":
        return f"ums-manual-{now:%Y%m%dT%H%M%SZ}"
    return f"ums-{tier}-{now.strftime(_FORMATS[tier])}"


def tier_of(name: str) -> str | None:
    match = NAME_RE.match(name)
    return match.group(1) if match else None


def due(existing: set[str], policy: Mapping[str, object], now: datetime.datetime) -> list[str]:
    """Names of the scheduled snapshots the dataset lacks for the current periods."""
    if not policy.get("enabled", True):
        return []
    names = []
    for tier in SCHEDULED:
        if int(policy.get(f"{tier}_keep") or 0) > 0:
            name = period_name(tier, now)
            if name not in existing:
                names.append(name)
    return names


def to_prune(
    existing: set[str], policy: Mapping[str, object], now: datetime.datetime | None = None
) -> list[str]:
    """Scheduled snapshots beyond retention (oldest first; none while disabled) and, given
    ``now``, on-demand ones older than ``manual_keep_days`` (0: kept), even while the
    schedule is off: they were taken by hand and age the same either way."""
    prune = manual_expired(existing, policy, now) if now is not None else []
    if not policy.get("enabled", True):
        return prune
    for tier in SCHEDULED:
        keep = int(policy.get(f"{tier}_keep") or 0)
        # The names sort by time: the period stamp is fixed-width UTC.
        ours = sorted((n for n in existing if tier_of(n) == tier), reverse=True)
        prune.extend(sorted(ours[keep:]))
    return prune


def taken_at(name: str) -> datetime.datetime | None:
    """The UTC time in one of our names (the period's start for scheduled ones)."""
    match = NAME_RE.match(name)
    if not match:
        return None
    stamp = match.group(2)
    layout = "%Y%m%dT%H%M%SZ" if len(stamp) == 16 else "%Y%m%dT%H%MZ"
    return datetime.datetime.strptime(stamp, layout).replace(tzinfo=datetime.UTC)


def manual_expired(
    existing: set[str], policy: Mapping[str, object], now: datetime.datetime
) -> list[str]:
    """On-demand snapshots older than the policy's ``manual_keep_days`` (oldest first).

    The age is read from the name (the time "Snapshot now" took it), not from ZFS's
    ``creation``: a dataset received onto a new node keeps its names but gets new
    creation times."""
    days = int(policy.get("manual_keep_days") or 0)
    if days <= 0:
        return []
    cutoff = now - datetime.timedelta(days=days)
    return sorted(n for n in existing if tier_of(n) == "manual" and (taken_at(n) or now) < cutoff)


def read(conn: Connector, parent: str) -> dict[str, list[SnapshotInfo]]:
    """``{dataset: [snapshots]}`` of every dataset under ``parent`` that has ours."""
    result = conn.run(
        ["zfs", "get", "-Hp", "-r", "-o", "name,property,value", "used,referenced,creation", parent]
    )
    if not result.ok:
        if "does not exist" in result.stderr:
            return {}
        raise SnapshotError(f"zfs get failed: {(result.stderr or result.stdout).strip()}")
    props: dict[str, dict[str, str]] = {}
    for line in result.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and "@" in parts[0]:
            props.setdefault(parts[0], {})[parts[1]] = parts[2]
    found: dict[str, list[SnapshotInfo]] = {}
    for full, values in props.items():
        dataset, _sep, name = full.partition("@")
        tier = tier_of(name)
        if tier is None:
            continue  # someone else's snapshot: listed by nobody, touched by nobody
        found.setdefault(dataset, []).append(
            SnapshotInfo(
                dataset=dataset,
                name=name,
                tier=tier,
                created=datetime.datetime.fromtimestamp(
                    int(values.get("creation", "0") or 0), tz=datetime.UTC
                ),
                used=_int(values.get("used")),
                referenced=_int(values.get("referenced")),
            )
        )
    for snaps in found.values():
        snaps.sort(key=lambda s: s.name)
    return found


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


def _run(conn: Connector, argv: list[str]) -> str:
    result = conn.run(argv)
    if not result.ok:
        return (result.stderr or result.stdout).strip()
    return ""


def take(conn: Connector, dataset: str, name: str) -> bool:
    """``zfs snapshot dataset@name``; False if it already existed (not an error)."""
    if tier_of(name) is None:
        raise SnapshotError(f"refusing snapshot name {name!r}")
    error = _run(conn, ["zfs", "snapshot", f"{dataset}@{name}"])
    if error:
        if "exists" in error:
            return False
        raise SnapshotError(f"zfs snapshot {shlex.quote(dataset)}@{name} failed: {error}")
    return True


def destroy(conn: Connector, dataset: str, name: str, *, busy_ok: bool = True) -> None:
    """``zfs destroy dataset@name`` of one of our snapshots; gone is fine.

    A snapshot a restore is reading (a dependent clone) is left for a later pass, or,
    with ``busy_ok=False`` (an administrator's delete), an error saying so."""
    if tier_of(name) is None:
        raise SnapshotError(f"refusing to destroy {dataset}@{name}")
    error = _run(conn, ["zfs", "destroy", f"{dataset}@{name}"])
    if "dependent clones" in error:
        if busy_ok:
            return  # a restore is reading it (backup.restore_run): pruned by a later pass
        raise SnapshotError(
            f"{dataset}@{name} is being read by a restore or an export (a dependent "
            "clone); delete it when that job has finished."
        )
    if error and "could not find" not in error and "does not exist" not in error:
        raise SnapshotError(f"zfs destroy {dataset}@{name} failed: {error}")
