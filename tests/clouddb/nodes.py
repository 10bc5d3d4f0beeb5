"""The cloud DB fleet: two cloud DB nodes (A, B) and a cloud files node (C) running the
Nextcloud STAND-IN's ``occ`` (Nextcloud cannot be installed here; only its ``dbhost``
setting is used). MariaDB is real: the product starts its own ``mariadbd`` in each cloud
DB node's namespace over SSH (own datadir, socket and port 3306 on the node's address),
exactly as on a real node. Shared by the node test and the fault test."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import paramiko
import pytest

from clouddb import mariadb
from servers.models import Node, Zone
from tests.cloudfiles import nodes as nextcloud_standin
from tests.converge.conftest import approved_node, trusting_cluster
from tests.converge.fleet import in_node
from tests.fixtures import Cast
from tests.harness.sshnodes import NodeCluster, TestNode
from tests.servers.nodes import PRIVATE_PATHS

A, B, C = 0, 1, 2
CLOUDDB_PATHS = ("/etc/ums-clouddb", mariadb.DATADIR_ROOT, mariadb.RUNDIR)
NC_USER, NC_PASSWORD = "nextcloud", "nc-pass-1"


@dataclass
class DbFleet:
    cluster: NodeCluster
    tnodes: list[TestNode]
    zone: Zone
    cast: Cast
    nodes: dict[int, Node]

    def approve(self, index: int) -> Node:
        roles = ["cloudfiles"] if index == C else ["clouddb"]
        node = approved_node(self.zone, self.cast, self.tnodes[index], roles)
        self.nodes[index] = node
        return node

    def sql(self, index: int, statement: str, *, user: str | None = None, check: bool = True):
        """``statement`` through the node's socket, as root or as the Nextcloud user."""
        argv = ["mariadb", f"--socket={mariadb.SOCKET}", "--batch", "--skip-column-names"]
        if user:
            argv += [f"--user={user}", f"--password={NC_PASSWORD}"]
        return in_node(self.tnodes[index], [*argv, "-e", statement], check=check)

    def rows(self, index: int) -> list[str]:
        return self.sql(index, "SELECT v FROM nextcloud.t ORDER BY id").stdout.split()

    def wait_rows(self, index: int, expected: list[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            got = self.sql(index, "SELECT v FROM nextcloud.t ORDER BY id", check=False)
            if got.returncode == 0 and got.stdout.split() == expected:
                return
            assert time.monotonic() < deadline, f"node {index} has {got.stdout!r} {got.stderr}"
            time.sleep(0.3)

    def dbhost(self) -> str | None:
        path = self.tnodes[C].path(f"{nextcloud_standin.STATE_DIR}/state.json")
        state = json.loads(path.read_text()) if path.exists() else {}
        return state.get("system", {}).get("dbhost")


def make_nextcloud_db(f: DbFleet, index: int) -> None:
    """What Nextcloud's installer leaves: its database and account (the test's rows)."""
    f.sql(
        index,
        "CREATE DATABASE nextcloud; "
        "CREATE TABLE nextcloud.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64)); "
        f"CREATE USER '{NC_USER}'@'localhost' IDENTIFIED BY '{NC_PASSWORD}'; "
        f"GRANT ALL ON nextcloud.* TO '{NC_USER}'@'localhost';",
    )


@pytest.fixture
def db_fleet(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,
    controller_key,
    zone: Zone,
    cast: Cast,
    settings,
) -> Iterator[DbFleet]:
    # The cloud DB work is the reconciler's, not converge's: approval converges nothing.
    settings.UMS_CONVERGE_ON_APPROVAL = False
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "nextcloud_occ": ["occ"]}
    workdir = tmp_path_factory.mktemp("clouddb")
    private = (*PRIVATE_PATHS, *CLOUDDB_PATHS, nextcloud_standin.STATE_DIR)
    with trusting_cluster(workdir, 3, controller_pkey, private) as cluster:
        nextcloud_standin.install(cluster.nodes[C])
        yield DbFleet(cluster, list(cluster.nodes), zone, cast, {})
