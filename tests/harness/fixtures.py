"""pytest fixtures for tests that need real sshd nodes and the controller's SSH key.

Owns the fixture side of the test-node harness; register it once for the whole suite
with ``pytest_plugins = ["tests.harness.fixtures"]`` in ``tests/conftest.py``.

* ``ssh_controller_key`` (session): a fresh ECDSA P-256 controller key (paramiko PKey).
* ``ssh_controller_public_key`` (session): its ``authorized_keys`` line.
* ``ssh_cluster`` (session): a :class:`NodeCluster` of 3 running nodes, shared; tests
  must leave its nodes running and with their keys (use ``ssh_nodes`` to break things).
* ``ssh_nodes`` (function): factory ``ssh_nodes(count=1, **kwargs) -> NodeCluster``;
  every cluster it made is torn down after the test.
* ``ssh_connect`` (function): factory ``ssh_connect(node, **kwargs) -> SSHConnector``
  logged in as root with the controller key and the node's pinned host key; closed
  after the test. Keyword arguments override the SSHConnector defaults.

Tests skip (rather than fail) only when not running as root, and under ``CI=true`` that
skip is a failure too (tests/plugins/real_components.py); any other harness failure
is an error, so a broken environment is never mistaken for a pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import paramiko
import pytest

from deploy.connector.keys import generate_private_key, public_key_openssh
from deploy.connector.ssh import SSHConnector

from .sshnodes import NodeCluster, TestNode

__all__ = [
    "ssh_cluster",
    "ssh_connect",
    "ssh_controller_key",
    "ssh_controller_public_key",
    "ssh_nodes",
]

NodeFactory = Callable[..., NodeCluster]
ConnectorFactory = Callable[..., SSHConnector]


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("sshd test nodes need root (network namespaces, bind mounts)")


@pytest.fixture(scope="session")
def ssh_controller_key() -> paramiko.PKey:
    return generate_private_key("ecdsa")


@pytest.fixture(scope="session")
def ssh_controller_public_key(ssh_controller_key: paramiko.PKey) -> str:
    return public_key_openssh(ssh_controller_key, "ums-controller@tests")


@pytest.fixture(scope="session")
def ssh_cluster(
    tmp_path_factory: pytest.TempPathFactory, ssh_controller_public_key: str
) -> Iterator[NodeCluster]:
    _require_root()
    cluster = NodeCluster(tmp_path_factory.mktemp("ssh-cluster"), 3, ssh_controller_public_key)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def ssh_nodes(
    tmp_path_factory: pytest.TempPathFactory, ssh_controller_public_key: str
) -> Iterator[NodeFactory]:
    clusters: list[NodeCluster] = []

    def factory(count: int = 1, **kwargs: Any) -> NodeCluster:
        _require_root()
        cluster = NodeCluster(
            tmp_path_factory.mktemp("ssh-nodes"), count, ssh_controller_public_key, **kwargs
        )
        clusters.append(cluster)
        return cluster.start()

    try:
        yield factory
    finally:
        for cluster in reversed(clusters):
            cluster.stop()


@pytest.fixture
def ssh_connect(ssh_controller_key: paramiko.PKey) -> Iterator[ConnectorFactory]:
    opened: list[SSHConnector] = []

    def factory(node: TestNode, **kwargs: Any) -> SSHConnector:
        options: dict[str, Any] = {
            "username": "root",
            "pkey": ssh_controller_key,
            "known_host_keys": node.known_host_keys,
            "connect_timeout": 5.0,
            "command_timeout": 60.0,
            "retries": 1,
            "backoff": 0.05,
        }
        options.update(kwargs)
        connector = SSHConnector(node.address, node.port, **options)
        opened.append(connector)
        return connector

    try:
        yield factory
    finally:
        for connector in opened:
            connector.close()


@pytest.fixture(autouse=True)
def close_kept_metric_connections() -> Iterator[None]:
    """Connections the metric sweep keeps between sweeps (deploy.persistent) belong to one
    test: a node of the next test may have the same address."""
    yield
    from deploy import persistent

    persistent.POOL.close_all()
