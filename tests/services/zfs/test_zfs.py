"""ZFS mail store: pure planning, and plan/apply against a real zfs-fuse pool.

zfs-fuse allows one daemon per machine: the fixture reuses a running one (and leaves
it running) or starts its own and stops it afterwards; the pool has a unique name and is
destroyed at teardown either way.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.services.base import DesiredState, DomainData, NodeView
from deploy.services.zfs import (
    DEDUP_MIN_MEMORY_BYTES,
    MailStoreError,
    MailStoreFacts,
    ZfsService,
    dedup_allowed,
    describe_plan,
    orphans,
)
from tests.services.localconn import LocalConnector

GiB = 1024**3


def _domain(name: str, quota_mb: int | None = 100) -> DomainData:
    return DomainData(name, True, "", (), quota_mb, {})


def _state(pool: str, *domains: DomainData, **settings: object) -> DesiredState:
    node = NodeView(2, "imap1.ums.test", "127.0.0.1", ("imap",), "debian", 1)
    return DesiredState(
        node=node, domains=list(domains), settings={"mail_store_pool": pool, **settings}
    )


# --------------------------------------------------------------------------- pure


def test_dedup_only_above_256_gb() -> None:
    assert not dedup_allowed(DEDUP_MIN_MEMORY_BYTES)
    assert not dedup_allowed(64 * GiB)
    assert dedup_allowed(DEDUP_MIN_MEMORY_BYTES + GiB)
    assert not dedup_allowed(512 * GiB, False)


def test_plan_from_facts_creates_and_updates_never_destroys() -> None:
    service = ZfsService()
    facts = MailStoreFacts(
        True,
        {
            "tank/mail": {"type": "filesystem", "compression": "off", "dedup": "off", "quota": "0"},
            "tank/mail/old.example": {
                "type": "filesystem",
                "compression": "on",
                "dedup": "off",
                "quota": "0",
            },
            "tank/mail/b.example": {
                "type": "filesystem",
                "compression": "on",
                "dedup": "off",
                "quota": "0",
            },
        },
        512 * GiB,
    )
    state = _state("tank", _domain("a.example", 50), _domain("b.example", None))
    plan = service.plan_from_facts(facts, state)
    assert plan == [
        [
            "zfs",
            "create",
            "-o",
            "compression=on",
            "-o",
            "dedup=on",
            "-o",
            "quota=50M",
            "tank/mail/a.example",
        ],
        ["zfs", "set", "dedup=on", "tank/mail/b.example"],
    ]
    assert "destroy" not in describe_plan(plan)
    assert orphans(facts, state) == ["tank/mail/old.example"]


def test_plan_refuses_crafted_names() -> None:
    facts = MailStoreFacts(True, {}, GiB)
    with pytest.raises(MailStoreError):
        ZfsService().plan_from_facts(facts, _state("tank", _domain("x.example/../../etc")))
    with pytest.raises(MailStoreError):
        ZfsService().plan_from_facts(facts, _state("tank", mail_store_compression="on -o x"))
    with pytest.raises(MailStoreError):
        ZfsService().apply(LocalConnector(), [["zfs", "destroy", "-r", "tank/mail"]])


# --------------------------------------------------------------------------- zfs-fuse


def _zpool_answers() -> bool:
    return subprocess.run(["zpool", "list"], capture_output=True, check=False).returncode == 0


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[str]:
    if shutil.which("zfs-fuse") is None:
        pytest.skip("zfs-fuse not installed")
    if os.geteuid() != 0:
        pytest.skip("zfs-fuse needs root")
    own_daemon: int | None = None
    name = f"umst{secrets.token_hex(3)}"
    created = False
    try:
        if not _zpool_answers():
            pid_file = tmp_path / "zfs-fuse.pid"
            subprocess.run(["zfs-fuse", "--no-kstat-mount", "-p", str(pid_file)], check=True)
            for _ in range(100):  # the daemon detaches before its socket answers
                if pid_file.exists() and _zpool_answers():
                    break
                time.sleep(0.1)
            own_daemon = int(pid_file.read_text())
        image = tmp_path / "pool.img"
        subprocess.run(["truncate", "-s", "256M", str(image)], check=True)
        subprocess.run(
            ["zpool", "create", "-m", str(tmp_path / "mnt"), name, str(image)],
            check=True,
            capture_output=True,
        )
        created = True
        yield name
    finally:
        if created:
            subprocess.run(["zpool", "destroy", "-f", name], check=False, capture_output=True)
        if own_daemon is not None:
            os.kill(own_daemon, signal.SIGTERM)
            for _ in range(100):
                try:
                    os.kill(own_daemon, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"zfs-fuse {own_daemon} did not stop")


def _props(dataset: str) -> dict[str, str]:
    out = subprocess.run(
        ["zfs", "get", "-Hp", "-o", "property,value", "compression,dedup,quota", dataset],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("\t") for line in out.splitlines())


def test_zfs_plan_apply_creates_dataset_per_domain(pool: str) -> None:
    conn, service = LocalConnector(), ZfsService()
    state = _state(pool, _domain("a.example", 64), _domain("b.example", None))
    plan = service.plan(conn, state)
    assert plan[0] == ["zfs", "create", "-p", f"{pool}/mail"]
    assert len(plan) == 3
    service.apply(conn, plan)
    # The test machine has far less than 256 GB of RAM: no dedup.
    assert _props(f"{pool}/mail/a.example") == {
        "compression": "on",
        "dedup": "off",
        "quota": str(64 * 1024**2),
    }
    assert _props(f"{pool}/mail/b.example")["quota"] == "0"
    assert service.plan(conn, state) == []  # second converge: nothing to do

    # A quota change and a compression change are applied in place.
    changed = _state(
        pool, _domain("a.example", 128), _domain("b.example", None), mail_store_compression="gzip"
    )
    plan = service.plan(conn, changed)
    assert ["zfs", "set", "quota=128M", f"{pool}/mail/a.example"] in plan
    service.apply(conn, plan)
    assert _props(f"{pool}/mail/a.example") == {
        "compression": "gzip",
        "dedup": "off",
        "quota": str(128 * 1024**2),
    }
    assert service.plan(conn, changed) == []


def test_zfs_removed_domain_keeps_its_dataset(pool: str) -> None:
    conn, service = LocalConnector(), ZfsService()
    service.apply(
        conn, service.plan(conn, _state(pool, _domain("a.example"), _domain("gone.example")))
    )
    mail_file = (
        Path(
            subprocess.run(
                ["zfs", "get", "-H", "-o", "value", "mountpoint", f"{pool}/mail/gone.example"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        / "kept.eml"
    )
    mail_file.write_text("Subject: still here\n\n")

    remaining = _state(pool, _domain("a.example"))
    assert service.plan(conn, remaining) == []  # nothing planned, least of all a destroy
    assert orphans(service.facts(conn, remaining), remaining) == [f"{pool}/mail/gone.example"]
    assert mail_file.read_text() == "Subject: still here\n\n"
    assert all(argv[:2] != ["zfs", "destroy"] for argv in conn.commands)


def test_zfs_missing_pool_is_an_error() -> None:
    if shutil.which("zpool") is None:
        pytest.skip("zfs tools not installed")
    with pytest.raises(MailStoreError, match="does not exist"):
        ZfsService().plan(
            LocalConnector(), _state(f"nopool{secrets.token_hex(3)}", _domain("a.example"))
        )


def _zfs_values(dataset: str, properties: str) -> list[str]:
    return subprocess.run(
        ["zfs", "get", "-H", "-o", "value", properties, dataset],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def test_zfs_demotes_a_replica_whose_mount_a_process_holds_busy(pool: str) -> None:
    """A primary demoted to replica (failback, fencing) can still have an IMAP session or
    a delivery inside its dataset: a plain ``zfs set mountpoint=none`` then fails with
    "target is busy" (seen in CI). Converge stops the holder and unmounts it first (never
    ``zfs unmount -f``: zfs-fuse detaches lazily and its pool then hangs on destroy)."""
    conn, service = LocalConnector(), ZfsService()
    service.apply(conn, service.plan(conn, _state(pool, _domain("held.example"))))
    dataset = f"{pool}/mail/held.example"
    mountpoint = _zfs_values(dataset, "mountpoint")[0]
    (Path(mountpoint) / "open.eml").write_text("Subject: open\n\n")
    # A process with its working directory and an open file in the mount holds it busy.
    holder = subprocess.Popen(
        ["sh", "-c", "exec 3<open.eml; exec sleep 60"], cwd=mountpoint, stdin=subprocess.DEVNULL
    )
    try:
        time.sleep(0.3)
        busy = subprocess.run(
            ["zfs", "set", "mountpoint=none", dataset], capture_output=True, check=False
        )
        assert busy.returncode != 0, "the mount was expected to be busy"
        demoted = _state(pool, replica_domains=["held.example"])
        plan = service.plan(conn, demoted)
        assert ["zfs", "unmount", dataset] in plan
        service.apply(conn, plan)
        # The holder was told to stop (SIGTERM), not left behind a detached mount.
        assert holder.wait(timeout=10) == -signal.SIGTERM
    finally:
        holder.kill()
        holder.wait()
    assert _zfs_values(dataset, "readonly,mountpoint,mounted") == ["on", "none", "no"]
    assert service.plan(conn, demoted) == []
