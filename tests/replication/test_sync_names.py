"""Sync snapshot names on a real zfs-fuse pool (a private daemon): each pass's name is
strictly after the newest sync snapshot, even when passes follow within a second and
pruning has freed earlier names (a replica still holding a freed name would refuse a
stream that reuses it: found by benchmarks/replication.py)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from replication import zfs
from tests.backup.privzfs import NsConnector, private_zfs
from tests.services.zfs.test_zfs import pool  # noqa: F401  (the shared pool fixture)


def test_sync_names_only_increase_after_pruning(tmp_path: Path) -> None:
    with private_zfs(tmp_path) as daemon:
        conn = NsConnector(daemon)
        dataset = f"{daemon.pool}/mail/names.example"
        daemon.run("zfs", "create", "-p", dataset)
        now = datetime.datetime(2026, 12, 7, 13, 0, 0, tzinfo=datetime.UTC)
        names = [zfs.take_sync_snapshot(conn, dataset, now) for _ in range(3)]
        assert names == [
            "ums-sync-20261207T130000Z",
            "ums-sync-20261207T130001Z",
            "ums-sync-20261207T130002Z",
        ]
        # The newest stays (the next base); the others no replica needs go.
        assert zfs.prune_sync(conn, dataset, set()) == names[:2]
        again = zfs.take_sync_snapshot(conn, dataset, now)
        assert again == "ums-sync-20261207T130003Z"
        assert [s.name for s in zfs.list_all(conn, dataset) or []] == [names[2], again]
        # Backup snapshots are listed too (the common base may be one of them), and
        # never pruned by the sync.
        daemon.run("zfs", "snapshot", f"{dataset}@ums-hourly-20261207T1300Z")
        later = zfs.take_sync_snapshot(conn, dataset, now)
        assert zfs.prune_sync(conn, dataset, {again}) == [names[2]]
        listed = [s.name for s in zfs.list_all(conn, dataset) or []]
        assert "ums-hourly-20261207T1300Z" in listed and listed[-1] == later
        assert zfs.list_all(conn, f"{daemon.pool}/mail/none.example") is None


@pytest.mark.django_db
def test_backup_retention_leaves_sync_snapshots_alone(pool: str, cast) -> None:  # noqa: F811
    from backup import actions, snapshot_run
    from backup.models import Snapshot
    from deploy.services.zfs import ZfsService
    from tests.backup.test_snapshots import _domain_data, _imap_node, _snapshot_names, at
    from tests.mail.helpers import make_domain
    from tests.services.localconn import LocalConnector
    from tests.services.zfs.test_zfs import _state

    conn = LocalConnector()
    node = _imap_node(cast)
    domain = make_domain(cast.ministry, "keepsync.example")
    service = ZfsService()
    service.apply(conn, service.plan(conn, _state(pool, _domain_data("keepsync.example"))))
    dataset = f"{pool}/mail/keepsync.example"
    sync = zfs.take_sync_snapshot(conn, dataset, at(3))
    actions.set_snapshot_policy(
        actor=None, customer=cast.ministry, hourly_keep=1, daily_keep=0, monthly_keep=0
    )
    for hour in (4, 5, 6):
        snapshot_run.run_node(conn, node, [domain], conf={"mail_store_pool": pool}, now=at(hour))
    assert _snapshot_names(dataset) == ["ums-hourly-20261207T0600Z", sync]
    assert sync not in set(Snapshot.objects.values_list("name", flat=True))


def test_sync_snapshots_carried_into_an_offnode_copy_are_pruned_there(tmp_path: Path) -> None:
    """``send -I`` between two backup snapshots brings the sync snapshots in between into
    the copy on the backup node; the copy pass prunes them there and the incremental
    chain still applies (its base is the newest backup snapshot, which stays)."""
    from backup import offnode_zfs

    with private_zfs(tmp_path) as daemon:
        conn = NsConnector(daemon)
        source = f"{daemon.pool}/mail/chain.example"
        copy = f"{daemon.pool}/copies/chain.example"
        daemon.run("zfs", "create", "-p", source)
        daemon.run("zfs", "create", "-p", "-o", "mountpoint=none", f"{daemon.pool}/copies")
        now = datetime.datetime(2026, 12, 7, 13, 0, 0, tzinfo=datetime.UTC)

        def snap(name: str) -> str:
            daemon.run("zfs", "snapshot", f"{source}@{name}")
            return name

        def relay(argv: list[str]) -> None:
            # send | receive inside the daemon's namespace: the stream a copy pass relays.
            receive = " ".join(offnode_zfs.receive_argv(copy))
            daemon.run("sh", "-c", f"{' '.join(argv)} | {receive}")

        def held() -> list[str]:
            return [s.name for s in zfs.list_all(conn, copy) or []]

        first = snap("ums-hourly-20261207T1300Z")
        relay(offnode_zfs.send_argv(source, first, None))
        syncs = [zfs.take_sync_snapshot(conn, source, now) for _ in range(2)]
        second = snap("ums-hourly-20261207T1400Z")
        relay(offnode_zfs.send_argv(source, second, first))
        assert held() == [first, *syncs, second]
        assert offnode_zfs.prune_sync(conn, copy) == syncs
        assert held() == [first, second]
        assert offnode_zfs.prune_sync(conn, copy) == []
        # The chain goes on from the newest backup snapshot.
        later = zfs.take_sync_snapshot(conn, source, now)
        third = snap("ums-hourly-20261207T1500Z")
        relay(offnode_zfs.send_argv(source, third, second))
        assert held() == [first, second, later, third]
        assert offnode_zfs.prune_sync(conn, copy) == [later]
        # A copy whose most recent snapshot is a sync one keeps it (a receive needs it).
        last = zfs.take_sync_snapshot(conn, source, now)
        relay(["zfs", "send", "-I", f"{source}@{third}", f"{source}@{last}"])
        assert offnode_zfs.prune_sync(conn, copy) == []
        assert held()[-1] == last
        assert offnode_zfs.prune_sync(conn, f"{daemon.pool}/copies/none.example") == []


def test_offnode_sync_prune_cut_midway_is_finished_by_the_next_pass(tmp_path: Path) -> None:
    """The connection to the backup node dies between two destroys: the copy keeps some
    sync snapshots and its chain; the next copy pass prunes the rest."""
    from backup import offnode_zfs
    from deploy.connector.base import ConnectorError

    class CutAfterOneDestroy(NsConnector):
        destroys = 0

        def run(self, argv: list[str], **kwargs):  # type: ignore[override]
            if argv[:2] == ["zfs", "destroy"]:
                self.destroys += 1
                if self.destroys == 2:
                    raise ConnectorError("connection lost")
            return super().run(argv, **kwargs)

    with private_zfs(tmp_path) as daemon:
        conn = NsConnector(daemon)
        source = f"{daemon.pool}/mail/cut.example"
        copy = f"{daemon.pool}/copies/cut.example"
        daemon.run("zfs", "create", "-p", source)
        daemon.run("zfs", "create", "-p", "-o", "mountpoint=none", f"{daemon.pool}/copies")
        now = datetime.datetime(2026, 12, 7, 13, 0, 0, tzinfo=datetime.UTC)
        receive = " ".join(offnode_zfs.receive_argv(copy))
        daemon.run("zfs", "snapshot", f"{source}@ums-hourly-20261207T1300Z")
        daemon.run("sh", "-c", f"zfs send {source}@ums-hourly-20261207T1300Z | {receive}")
        syncs = [zfs.take_sync_snapshot(conn, source, now) for _ in range(3)]
        daemon.run("zfs", "snapshot", f"{source}@ums-hourly-20261207T1400Z")
        daemon.run(
            "sh",
            "-c",
            f"zfs send -I {source}@ums-hourly-20261207T1300Z "
            f"{source}@ums-hourly-20261207T1400Z | {receive}",
        )
        with pytest.raises(ConnectorError):
            offnode_zfs.prune_sync(CutAfterOneDestroy(daemon), copy)
        assert offnode_zfs.prune_sync(conn, copy) == syncs[1:]
        held = [s.name for s in zfs.list_all(conn, copy) or []]
        assert held == ["ums-hourly-20261207T1300Z", "ums-hourly-20261207T1400Z"]
