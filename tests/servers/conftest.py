"""Fixtures for server tests: controller key, real sshd nodes, a zone in the cast's tree."""

from __future__ import annotations

from collections.abc import Iterator

import paramiko
import pytest

from deploy.connector.keys import public_key_openssh
from servers import actions as server_actions
from servers.models import Zone
from tests.fixtures import Cast
from tests.harness.sshnodes import NodeCluster

from .nodes import PRIVATE_PATHS, controller_key_row, install_stand_ins, new_pkey


@pytest.fixture(autouse=True)
def no_converge_on_approval(settings) -> None:
    """These nodes share the host's package and daemon paths (only a few are private), so
    the approval's full converge would install and start Postfix on the test machine
    itself; node configuration is tested in tests/converge, whose nodes keep every daemon
    path private."""
    settings.UMS_CONVERGE_ON_APPROVAL = False


@pytest.fixture(scope="session")
def controller_pkey() -> paramiko.PKey:
    return new_pkey()


@pytest.fixture
def controller_key(db: None, controller_pkey: paramiko.PKey):
    return controller_key_row(controller_pkey)


@pytest.fixture
def zone(cast: Cast) -> Zone:
    return server_actions.create_zone(
        actor=None, customer=cast.government, name="Ulaanbaatar DC1", location="UB"
    )


@pytest.fixture
def node_cluster(tmp_path_factory: pytest.TempPathFactory, controller_pkey: paramiko.PKey):
    """A factory of real sshd nodes trusting the controller key; torn down after the test."""
    clusters: list[NodeCluster] = []
    public = public_key_openssh(controller_pkey, "ums-controller-v1")
    # The harness's own key file trusts an unrelated key: the controller is authorised only
    # through root's ~/.ssh/authorized_keys, as bootstrapcore.sh leaves a node, so rotation
    # and decommissioning really change who may log in.
    unrelated = public_key_openssh(new_pkey(), "harness-only")

    def start(count: int = 1) -> NodeCluster:
        cluster = NodeCluster(
            tmp_path_factory.mktemp("servers"), count, unrelated, private_paths=PRIVATE_PATHS
        )
        clusters.append(cluster)
        cluster.start()
        for node in cluster.nodes:
            install_stand_ins(node)
            keys = node.path("/root/.ssh/authorized_keys")
            keys.parent.mkdir(mode=0o700, exist_ok=True)
            keys.write_text(public + "\n")
        return cluster

    try:
        yield start
    finally:
        for cluster in reversed(clusters):
            cluster.stop()


@pytest.fixture
def one_node(node_cluster) -> Iterator:
    yield node_cluster(1).nodes[0]
