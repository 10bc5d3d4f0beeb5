"""A mail fleet of any shape for converge tests, optionally with a ZFS pool per IMAP node.

``tests/converge/conftest.py`` has the two-node fleet most tests need; placement and the
mail store need more: several IMAP nodes, and a real zfs-fuse pool *inside* an IMAP node.

zfs-fuse and the node: the daemon mounts datasets in its own mount namespace, so to be
seen by the node's Postfix and Courier it must run in the node's namespace (the one its
sshd runs in, entered with ``nsenter``), and its socket, lock and pool cache folders
(``/var/run/zfs``, ``/var/lock/zfs``, ``/var/lib/zfs``) are private paths of the node.
That also keeps it apart from any zfs-fuse another test runs on the machine itself: the
"one daemon per machine" limit comes from those fixed paths. Each pool has its own name
and is destroyed at teardown, then the daemon is stopped with the node.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest

from servers.models import Node, Zone
from tests.fixtures import Cast
from tests.harness.sshnodes import NodeCluster, TestNode

from .conftest import MAIL_PRIVATE_PATHS, _alive, approved_node, trusting_cluster

ZFS_PRIVATE_PATHS = ("/var/run/zfs", "/var/lock/zfs", "/var/lib/zfs")


@dataclass
class Fleet:
    cluster: NodeCluster
    tnodes: list[TestNode]
    nodes: list[Node]
    pools: dict[int, str] = field(default_factory=dict)  # index -> pool name

    def in_node(
        self, index: int, argv: Sequence[str], *, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the namespaces of node ``index``'s sshd (what its daemons see)."""
        return in_node(self.tnodes[index], argv, check=check, timeout=timeout)


def in_node(
    tnode: TestNode, argv: Sequence[str], *, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    pid = tnode.pid
    assert pid is not None, f"{tnode.name} is not running"
    prefix = ["nsenter", "-t", str(pid), "-m", "-u"]
    if tnode.netns:
        prefix.append("-n")
    proc = subprocess.run(
        [*prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} in {tnode.name}: {proc.returncode} {proc.stderr}")
    return proc


def new_pool_name() -> str:
    return f"umsh4{secrets.token_hex(3)}"


def _start_zfs(tnode: TestNode, workdir: Path, pool: str) -> None:
    """zfs-fuse in ``tnode``'s namespace and a fresh 256 MB pool named ``pool``."""
    in_node(tnode, ["zfs-fuse", "--no-kstat-mount", "-p", "/var/run/zfs/ums-test.pid"])
    deadline = time.monotonic() + 60  # the daemon detaches before its socket answers
    while in_node(tnode, ["zpool", "list"], check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError("zfs-fuse in the node did not answer within 60 s")
        time.sleep(0.2)
    image = workdir / f"{pool}.img"
    subprocess.run(["truncate", "-s", "256M", str(image)], check=True)
    in_node(tnode, ["zpool", "create", "-m", f"/var/lib/zfs/{pool}", pool, str(image)])


def _stop_zfs(tnode: TestNode, pool: str | None) -> None:
    if not tnode.running:
        return
    if pool:
        in_node(tnode, ["zpool", "destroy", "-f", pool], check=False)
    pid_file = tnode.path("/var/run/zfs/ums-test.pid")
    if pid_file.exists():
        pid = pid_file.read_text().strip()
        in_node(tnode, ["kill", pid], check=False)
        deadline = time.monotonic() + 30
        while _alive(int(pid)) and time.monotonic() < deadline:
            time.sleep(0.1)


@contextlib.contextmanager
def fleet(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,
    zone: Zone,
    cast: Cast,
    roles: Sequence[Sequence[str]],
    *,
    zfs: dict[int, str] | None = None,
) -> Iterator[Fleet]:
    """Nodes with ``roles[i]``, approved (and so converged) in order; ``zfs`` maps node
    indexes to the pool each gets before approval. Every daemon is gone after the block."""
    zfs = zfs or {}
    workdir = tmp_path_factory.mktemp("fleet")
    private = (*MAIL_PRIVATE_PATHS, *(ZFS_PRIVATE_PATHS if zfs else ()))
    with trusting_cluster(workdir, len(roles), controller_pkey, private) as cluster:
        pools: dict[int, str] = {}
        try:
            for index, pool in zfs.items():
                pools[index] = pool
                _start_zfs(cluster.nodes[index], workdir, pool)
            nodes = [
                approved_node(zone, cast, tnode, node_roles)
                for tnode, node_roles in zip(cluster.nodes, roles, strict=True)
            ]
            yield Fleet(cluster, list(cluster.nodes), nodes, pools)
        finally:
            # Before the cluster stops: the pools live on files inside its work folder.
            for index, pool in pools.items():
                _stop_zfs(cluster.nodes[index], pool)
