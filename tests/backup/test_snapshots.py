"""Mail store snapshots: names, due and retention, the inherited policy, the scheduler,
and a real pass on zfs-fuse (the pool fixture of tests/services/zfs: one daemon per
machine, reused)."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest

from backup import actions, snapshot_run, snapshots, tasks
from backup.models import Snapshot
from backup.policy import effective_policy
from deploy.models import DomainPlacement
from deploy.services.zfs import ZfsService
from servers.choices import NodeStatus
from servers.models import Node
from tests.fixtures import Cast
from tests.mail.helpers import make_domain
from tests.services.localconn import LocalConnector
from tests.services.zfs.test_zfs import _state, pool  # noqa: F401  (the shared pool fixture)
from ums.models import Job

UTC = datetime.UTC
POLICY = {"enabled": True, "hourly_keep": 2, "daily_keep": 1, "monthly_keep": 0}


def at(hour: int, day: int = 7) -> datetime.datetime:
    return datetime.datetime(2026, 12, day, hour, 17, 42, tzinfo=UTC)


def test_names_due_and_retention() -> None:
    assert snapshots.period_name("hourly", at(6)) == "ums-hourly-20261207T0600Z"
    assert snapshots.period_name("daily", at(6)) == "ums-daily-20261207T0000Z"
    assert snapshots.period_name("monthly", at(6)) == "ums-monthly-20261201T0000Z"
    assert snapshots.period_name("manual", at(6)) == "ums-manual-20261207T061742Z"
    assert snapshots.due(set(), POLICY, at(6)) == [
        "ums-hourly-20261207T0600Z",
        "ums-daily-20261207T0000Z",
    ]
    have = {"ums-hourly-20261207T0600Z", "ums-daily-20261207T0000Z"}
    assert snapshots.due(have, POLICY, at(6)) == []  # not re-taken within the period
    have |= {
        "ums-hourly-20261207T0400Z",
        "ums-hourly-20261207T0500Z",
        "ums-daily-20261206T0000Z",
        "ums-monthly-20261101T0000Z",  # tier turned off: pruned
        "ums-manual-20261201T101010Z",  # on demand: kept (no manual_keep_days)
        "before-upgrade",  # not ours: never touched
    }
    assert snapshots.to_prune(have, POLICY) == [
        "ums-hourly-20261207T0400Z",
        "ums-daily-20261206T0000Z",
        "ums-monthly-20261101T0000Z",
    ]
    assert snapshots.to_prune(have, {**POLICY, "enabled": False}) == []
    assert snapshots.due(set(), {**POLICY, "enabled": False}, at(6)) == []


def test_on_demand_snapshots_age_out_by_the_time_in_their_name() -> None:
    policy = {**POLICY, "manual_keep_days": 3}
    old, young = "ums-manual-20261203T061741Z", "ums-manual-20261204T061743Z"
    have = {old, young, "ums-hourly-20261207T0600Z", "before-upgrade"}
    assert snapshots.to_prune(have, policy, at(6)) == [old]
    # The schedule off does not stop the ageing; 0 days keeps them; no time, no ageing.
    assert snapshots.to_prune(have, {**policy, "enabled": False}, at(6)) == [old]
    assert snapshots.to_prune(have, {**policy, "manual_keep_days": 0}, at(6)) == []
    assert snapshots.to_prune(have, policy) == []
    assert effective_policy_default("manual_keep_days") == 30


def effective_policy_default(field: str) -> object:
    from backup.policy import DEFAULTS

    return DEFAULTS[field]


def test_destroy_refuses_anything_but_our_snapshots() -> None:
    conn = LocalConnector()
    for name in ("ums-weekly-20261201T0000Z", "before-upgrade", "x@y"):
        with pytest.raises(snapshots.SnapshotError):
            snapshots.destroy(conn, "tank/mail/a.example", name)
    assert conn.commands == []


def test_policy_is_inherited_with_its_source(cast: Cast) -> None:
    result = effective_policy(cast.department)
    assert result["hourly_keep"] == {
        "value": 24,
        "source": {"level": "default", "id": None, "name": ""},
    }
    actions.set_snapshot_policy(actor=cast.sub_admin, customer=cast.government, daily_keep=7)
    actions.set_snapshot_policy(actor=cast.sub_admin, customer=cast.ministry, hourly_keep=0)
    result = effective_policy(cast.department)
    assert result["daily_keep"]["value"] == 7
    assert result["daily_keep"]["source"]["name"] == "Government"
    assert result["hourly_keep"]["value"] == 0
    assert result["hourly_keep"]["source"]["name"] == "Ministry"
    assert effective_policy(cast.ministry, upto_parent=True)["hourly_keep"]["value"] == 24
    with pytest.raises(Exception):  # noqa: B017 - outside scope: 404
        actions.set_snapshot_policy(actor=cast.sibling_admin, customer=cast.ministry, daily_keep=1)


def _imap_node(cast: Cast, hostname: str = "imap1.example.org") -> Node:
    from servers import actions as server_actions

    zone = server_actions.create_zone(actor=None, customer=cast.government, name="DC")
    return Node.objects.create(
        customer=cast.government,
        customer_path=cast.government.path,
        zone=zone,
        hostname=hostname,
        ssh_address="192.0.2.30",
        status=NodeStatus.ACTIVE,
        roles=["imap"],
    )


def test_scheduler_starts_one_job_per_due_node(cast: Cast, settings) -> None:
    settings.UMS_CONVERGE = {"mail_store_pool": "tank"}
    node = _imap_node(cast)
    domain = make_domain(cast.ministry, "sched.example")
    DomainPlacement.objects.update_or_create(domain=domain, defaults={"node": node})
    assert tasks.schedule(now=at(6))["started"] == [node.hostname]
    assert tasks.schedule(now=at(6))["started"] == []  # one is pending already
    Job.objects.filter(kind=actions.SNAPSHOT_JOB).update(status=Job.SUCCEEDED)
    for name in (
        "ums-hourly-20261207T0600Z",
        "ums-daily-20261207T0000Z",
        "ums-monthly-20261201T0000Z",
    ):
        Snapshot.objects.create(
            node=node,
            domain=domain,
            customer_path=domain.customer_path,
            dataset="tank/mail/sched.example",
            name=name,
            tier=snapshots.tier_of(name),
            taken_at=at(6),
            observed_at=at(6),
        )
    assert tasks.schedule(now=at(6))["started"] == []  # everything of this hour exists
    assert tasks.schedule(now=at(7))["started"] == [node.hostname]


def test_snapshot_now_is_a_job_in_scope(cast: Cast) -> None:
    node = _imap_node(cast)
    domain = make_domain(cast.ministry, "now.example")
    DomainPlacement.objects.update_or_create(domain=domain, defaults={"node": node})
    job = actions.snapshot_domain_now(actor=cast.sub_admin, domain=domain)
    assert job.kind == actions.SNAPSHOT_JOB
    assert job.params == {"node_id": node.pk, "domain_ids": [domain.pk], "manual": True}
    with pytest.raises(Exception):  # noqa: B017 - outside scope: 404
        actions.snapshot_domain_now(actor=cast.sibling_admin, domain=domain)


# --------------------------------------------------------------------------- zfs-fuse


def _snapshot_names(dataset: str) -> list[str]:
    out = subprocess.run(
        ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(line.split("@", 1)[1] for line in out.splitlines() if "@" in line)


def test_snapshot_pass_on_zfs_fuse(pool: str, cast: Cast) -> None:  # noqa: F811
    conn = LocalConnector()
    conf = {"mail_store_pool": pool}
    node = _imap_node(cast)
    domain = make_domain(cast.ministry, "snap.example")
    service = ZfsService()
    service.apply(conn, service.plan(conn, _state(pool, _domain_data("snap.example"))))
    dataset = f"{pool}/mail/snap.example"
    mountpoint = subprocess.run(
        ["zfs", "get", "-H", "-o", "value", "mountpoint", dataset],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(mountpoint, "msg.eml").write_bytes(b"Subject: hi\n\n" + b"x" * 100_000)
    actions.set_snapshot_policy(
        actor=None, customer=cast.ministry, hourly_keep=2, daily_keep=1, monthly_keep=0
    )

    for hour in (4, 5, 6):
        snapshot_run.run_node(conn, node, [domain], conf=conf, now=at(hour))
    again = snapshot_run.run_node(conn, node, [domain], conf=conf, now=at(6))
    assert again == {"taken": [], "pruned": []}  # idempotent within the period
    assert _snapshot_names(dataset) == [
        "ums-daily-20261207T0000Z",
        "ums-hourly-20261207T0500Z",
        "ums-hourly-20261207T0600Z",
    ]
    manual = snapshot_run.run_node(conn, node, [domain], conf=conf, manual=True, now=at(6))
    assert manual["taken"] == [f"{dataset}@ums-manual-20261207T061742Z"]
    # "Snapshot now" twice in one second still takes a second snapshot (mail may have
    # arrived in between): the name moves on by a second instead of being skipped.
    again = snapshot_run.run_node(conn, node, [domain], conf=conf, manual=True, now=at(6))
    assert again["taken"] == [f"{dataset}@ums-manual-20261207T061743Z"]

    rows = {s.name: s for s in Snapshot.objects.filter(domain=domain)}
    assert sorted(rows) == _snapshot_names(dataset)
    daily = rows["ums-daily-20261207T0000Z"]
    assert daily.referenced_bytes > 50_000  # the message is in it
    assert daily.tier == "daily" and daily.customer_path == domain.customer_path
    # Observed state: a snapshot destroyed behind our back disappears from the list.
    subprocess.run(["zfs", "destroy", f"{dataset}@ums-hourly-20261207T0500Z"], check=True)
    snapshot_run.run_node(conn, node, [domain], conf=conf, now=at(6))
    assert "ums-hourly-20261207T0500Z" not in set(
        Snapshot.objects.filter(domain=domain).values_list("name", flat=True)
    )
    assert all(argv[:2] != ["zfs", "destroy"] or "@ums-" in argv[2] for argv in conn.commands)


def _domain_data(name: str):
    from deploy.services.base import DomainData

    return DomainData(name, True, "", (), None, {})
