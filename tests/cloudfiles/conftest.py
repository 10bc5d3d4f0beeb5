"""A real namespaced sshd node with the cloudfiles role, running the Nextcloud STAND-IN."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import paramiko
import pytest

from deploy.services import registry
from deploy.services.nextcloud import SERVICE as NEXTCLOUD
from servers.models import Node, Zone
from tests.converge.conftest import MAIL_PRIVATE_PATHS, approved_node, trusting_cluster
from tests.fixtures import Cast
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401

from . import nodes
from .nodes import Nextcloud

PRIVATE_PATHS = (*MAIL_PRIVATE_PATHS, nodes.STATE_DIR)


@dataclass
class CloudNode:
    nextcloud: Nextcloud
    node: Node


def node_settings() -> dict:
    return {
        "nextcloud_occ": ["occ"],
        "nextcloud_url": "http://{address}:PORT",
        "nextcloud_tls_verify": False,
    }


@pytest.fixture
def files_services(monkeypatch: pytest.MonkeyPatch, settings) -> None:
    monkeypatch.setattr(registry, "SERVICES", [NEXTCLOUD])
    settings.UMS_CONVERGE = node_settings()
    settings.UMS_AUTO_CONVERGE = True
    settings.UMS_CONVERGE_ON_APPROVAL = True


@pytest.fixture
def cloud_node(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,  # noqa: F811
    controller_key,  # noqa: F811
    zone: Zone,  # noqa: F811
    cast: Cast,
    files_services: None,
    settings,
) -> Iterator[CloudNode]:
    workdir = tmp_path_factory.mktemp("cloudfiles")
    with trusting_cluster(workdir, 1, controller_pkey, PRIVATE_PATHS) as cluster:
        tnode = cluster.nodes[0]
        nodes.install(tnode)
        served = nodes.serve(tnode)
        nextcloud = next(served)
        settings.UMS_CONVERGE = {
            **settings.UMS_CONVERGE,
            "nextcloud_url": f"http://{{address}}:{nextcloud.port}",
        }
        try:
            node = approved_node(zone, cast, tnode, ["cloudfiles"])
            yield CloudNode(nextcloud, node)
        finally:
            served.close()
