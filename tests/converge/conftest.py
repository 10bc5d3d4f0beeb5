"""Fixtures for converge tests: two real mail nodes (SMTP and IMAP roles) in the harness.

Each node gets private copies of every path Postfix and Courier write (configuration,
queue, data directory, Courier's run and state directories, the mail store), so their
daemons run at the real default paths without touching the host's or each other's.
Courier, the delivery agent and Postfix are converged here; the content filter and the
other services have their own tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from deploy import dirty
from deploy.connector.keys import public_key_openssh
from deploy.services import registry
from deploy.services.courier import SERVICE as COURIER
from deploy.services.lda import SERVICE as LDA
from deploy.services.postfix import SERVICE as POSTFIX
from servers import actions as server_actions
from servers.models import Node, Zone
from tests.fixtures import Cast
from tests.harness.sshnodes import NodeCluster, TestNode
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401
from tests.servers.nodes import PRIVATE_PATHS, install_stand_ins, new_pkey, registered_node

MAIL_PRIVATE_PATHS = (
    *PRIVATE_PATHS,
    "/var/lib/postfix",
    "/run/courier",
    "/var/lib/courier",
    # The Courier service installs a cron entry (mailbox policy, Trash purge).
    "/etc/cron.d",
    # Dovecot's LDA (Sieve, auto-responder): its private configuration and state.
    "/etc/ums-lda",
    "/run/ums-lda",
    "/var/lib/ums-lda",
    # OpenDKIM (signing on SMTP nodes): its configuration, keys and pid file.
    "/etc/ums-opendkim",
    "/run/ums-opendkim",
    # OpenDMARC (SPF and DMARC checks on SMTP nodes): configuration, resolver, pid file.
    "/etc/ums-opendmarc",
    "/run/ums-opendmarc",
)
DAEMON_NAMES = ("master", "authdaemond", "couriertcpd", "courierlogger")


@dataclass
class MailNodes:
    cluster: NodeCluster
    smtp: TestNode
    imap: TestNode
    smtp_node: Node
    imap_node: Node


def node_daemons(tnode: TestNode) -> list[str]:
    """Command names of the mail daemons still running in ``tnode``."""
    names = []
    for pid in tnode.processes():
        try:
            with open(f"/proc/{pid}/comm") as handle:
                name = handle.read().strip()
        except OSError:
            continue
        if name in DAEMON_NAMES:
            names.append(name)
    return names


@pytest.fixture
def mail_services(monkeypatch: pytest.MonkeyPatch, settings) -> None:
    monkeypatch.setattr(registry, "SERVICES", [COURIER, LDA, POSTFIX])
    # Routing and access only: the content filter (which needs spamd and clamd running on
    # the SMTP node) has its own end-to-end tests in test_filtering.py.
    settings.UMS_CONVERGE = {
        "postfix_maillog_file": "/var/spool/postfix/maillog",
        "lda_log_file": "/var/lib/ums-lda/lda.log",
        "content_filter": False,
    }
    settings.UMS_AUTO_CONVERGE = True
    settings.UMS_CONVERGE_ON_APPROVAL = True


@contextlib.contextmanager
def trusting_cluster(
    workdir: Path, count: int, pkey: paramiko.PKey, private_paths: Sequence[str]
) -> Iterator[NodeCluster]:
    """Started namespaced nodes that trust the controller's key (and have the recording
    stand-ins); when the block ends every process they ran is gone, or the test fails."""
    public = public_key_openssh(pkey, "ums-controller-v1")
    cluster = NodeCluster(
        workdir,
        count,
        public_key_openssh(new_pkey(), "harness-only"),
        private_paths=tuple(private_paths),
    )
    cluster.start()
    try:
        if cluster.mode != "netns" or not cluster.isolated:
            pytest.skip("mail nodes need network and mount namespaces (ports 25/993)")
        for tnode in cluster.nodes:
            install_stand_ins(tnode)
            keys = tnode.path("/root/.ssh/authorized_keys")
            keys.parent.mkdir(mode=0o700, exist_ok=True)
            keys.write_text(public + "\n")
        # Node ids restart with each test database; flags in Redis must not carry over.
        dirty.forget(range(1, 200))
        yield cluster
    finally:
        pids = {pid for t in cluster.nodes for pid in t.processes()}
        cluster.stop()
        leftovers = [pid for pid in pids if _alive(pid)]
        assert not leftovers, f"processes left running after teardown: {leftovers}"


def approved_node(in_zone: Zone, cast: Cast, tnode: TestNode, roles: Sequence[str]) -> Node:
    """Register ``tnode`` and approve it (which converges it, with UMS_CONVERGE_ON_APPROVAL)."""
    node = registered_node(in_zone, tnode, roles=list(roles))
    server_actions.approve_node(actor=cast.sub_admin, node=node)
    node.refresh_from_db()
    return node


@pytest.fixture
def mail_nodes(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,  # noqa: F811
    controller_key,  # noqa: F811
    zone: Zone,  # noqa: F811
    cast: Cast,
    mail_services: None,
) -> Iterator[MailNodes]:
    """Two approved, converged nodes (smtp, imap); every daemon stopped at teardown."""
    workdir = tmp_path_factory.mktemp("converge")
    with trusting_cluster(workdir, 2, controller_pkey, MAIL_PRIVATE_PATHS) as cluster:
        smtp, imap = cluster.nodes
        imap_node = approved_node(zone, cast, imap, ["imap"])
        smtp_node = approved_node(zone, cast, smtp, ["smtp"])
        yield MailNodes(cluster, smtp, imap, smtp_node, imap_node)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
