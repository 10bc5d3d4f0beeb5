"""Helpers for server tests: a controller key the test nodes trust, and enrolled nodes.

The real sshd nodes come from tests/harness. Commands that would act on this machine
itself (``reboot``, and ``service`` which would restart the host's daemons, since test
nodes share the host's process table) are replaced inside the node, and only there, by
recording stand-ins in a private /usr/local/sbin, which comes first in root's PATH.
"""

from __future__ import annotations

import stat
from pathlib import Path

import paramiko

from deploy.connector.keys import (
    fingerprint_sha256,
    generate_private_key,
    private_key_to_pem,
    public_key_openssh,
)
from deploy.models import ControllerKey
from servers.models import Node, Zone
from tests.harness.sshnodes import DEFAULT_PRIVATE_PATHS, TestNode

STAND_IN_DIR = "/usr/local/sbin"
PRIVATE_PATHS = (*DEFAULT_PRIVATE_PATHS, STAND_IN_DIR)
CALLS_LOG = "/usr/local/sbin/stand-in-calls.log"

STAND_IN = """#!/bin/sh
# Recording stand-in for a command that would act on the test machine itself.
echo "$(basename "$0") $*" >> {log}
echo "stand-in $(basename "$0") ran: $*"
"""


def install_stand_ins(node: TestNode, names: tuple[str, ...] = ("reboot", "service")) -> None:
    for name in names:
        path = node.path(f"{STAND_IN_DIR}/{name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STAND_IN.format(log=CALLS_LOG))
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def stand_in_calls(node: TestNode) -> list[str]:
    log = node.path(CALLS_LOG)
    return log.read_text().splitlines() if log.exists() else []


def controller_key_row(pkey: paramiko.PKey, version: int = 1) -> ControllerKey:
    public = public_key_openssh(pkey, f"ums-controller-v{version}")
    return ControllerKey.objects.create(
        version=version,
        private_key_pem=private_key_to_pem(pkey),
        public_key=public,
        fingerprint=fingerprint_sha256(public),
    )


def new_pkey() -> paramiko.PKey:
    return generate_private_key("ecdsa")


def registered_node(zone: Zone, tnode: TestNode, **fields: object) -> Node:
    """A node as bootstrapcore.sh would have registered it (pending approval)."""
    defaults: dict[str, object] = {
        "customer": zone.customer,
        "customer_path": zone.customer_path,
        "zone": zone,
        "hostname": tnode.hostname,
        "addresses": [tnode.address],
        "ssh_address": tnode.address,
        "ssh_port": tnode.port,
        "reported_host_keys": [tnode.host_key],
        "roles": ["smtp"],
    }
    defaults.update(fields)
    return Node.objects.create(**defaults)


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
