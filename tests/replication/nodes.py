"""The replication fleet: IMAP node A (primary, zfs-fuse pool), an SMTP node and IMAP
node B (a pool of the same name on its own zfs-fuse), plus helpers to stop and bring back
a node with its pool, deliver mail and read it over IMAPS. Shared by the node test and
the fault test (node tests are slow: few of them, each covering a whole story)."""

from __future__ import annotations

import imaplib
import secrets
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import paramiko
import pytest

from deploy.services import registry
from deploy.services.zfs import SERVICE as ZFS
from servers import actions as server_actions
from servers.models import Zone
from tests.converge.conftest import MAIL_PRIVATE_PATHS, approved_node, trusting_cluster
from tests.converge.fleet import (
    ZFS_PRIVATE_PATHS,
    Fleet,
    _start_zfs,
    _stop_zfs,
    fleet,
    in_node,
    new_pool_name,
)
from tests.converge.test_mail_flow import tls
from tests.converge.test_mail_store import PASSWORD, _failed_jobs
from tests.fixtures import Cast

A, SMTP, B = 0, 1, 2
#: The two-zone fleet (issue 14's layout): IMAP A, SMTP S1 and IMAP C in the first zone,
#: IMAP B and SMTP S2 in the second.
ZA, ZS1, ZB, ZS2, ZC = 0, 1, 2, 3, 4
DOMAIN = "repl.example"


@pytest.fixture
def repl_fleet(
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    controller_pkey: paramiko.PKey,
    controller_key,
    zone: Zone,
    cast: Cast,
    mail_services: None,
    settings,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Fleet]:
    pool = new_pool_name()
    monkeypatch.setattr(registry, "SERVICES", [ZFS, *registry.SERVICES])
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "mail_store_pool": pool}
    with fleet(
        tmp_path_factory, controller_pkey, zone, cast, [["imap"], ["smtp"], ["imap"]], zfs={A: pool}
    ) as f:
        _start_zfs(f.tnodes[B], tmp_path, pool)
        f.pools[B] = pool
        try:
            yield f
        finally:
            _stop_zfs(f.tnodes[B], pool)
            f.pools.pop(B, None)


@pytest.fixture
def zones_fleet(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,
    controller_key,
    zone: Zone,
    cast: Cast,
    mail_services: None,
    settings,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Fleet]:
    """Three IMAP nodes (each its own zfs-fuse and pool of the same name) across two
    zones and one SMTP node per zone, approved in index order (so A gets the domains)."""
    pool = new_pool_name()
    monkeypatch.setattr(registry, "SERVICES", [ZFS, *registry.SERVICES])
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "mail_store_pool": pool}
    other = server_actions.create_zone(
        actor=None, customer=cast.government, name="Darkhan DC2", location="Darkhan"
    )
    layout = [(zone, ["imap"]), (zone, ["smtp"]), (other, ["imap"]), (other, ["smtp"]),
              (zone, ["imap"])]  # fmt: skip
    workdir = tmp_path_factory.mktemp("zones")
    private = (*MAIL_PRIVATE_PATHS, *ZFS_PRIVATE_PATHS)
    with trusting_cluster(workdir, len(layout), controller_pkey, private) as cluster:
        pools: dict[int, str] = {}
        try:
            for index in (ZA, ZB, ZC):
                images = _image_dir(workdir, index)
                images.mkdir()
                pools[index] = pool
                _start_zfs(cluster.nodes[index], images, pool)
            nodes = [
                approved_node(in_zone, cast, tnode, roles)
                for tnode, (in_zone, roles) in zip(cluster.nodes, layout, strict=True)
            ]
            yield Fleet(cluster, list(cluster.nodes), nodes, pools)
        finally:
            for index, name in pools.items():
                _stop_zfs(cluster.nodes[index], name)


def _image_dir(base: Path, index: int) -> Path:
    """Where node ``index`` of a fleet keeps its pool image (one folder per node: the
    pools share a name)."""
    return base / f"pool-image-{index}"


def bring_back(f: Fleet, index: int) -> None:
    """sshd back, zfs-fuse back in the node's namespace and its pool imported (what a
    rebooted node does by itself); nothing else is touched: converge does the rest."""
    tnode = f.tnodes[index]
    tnode.start()
    # The daemon was killed with the node: its pid file, socket and lock are stale.
    in_node(tnode, ["sh", "-c", "rm -rf /var/run/zfs/* /var/lock/zfs/*"])
    in_node(tnode, ["zfs-fuse", "--no-kstat-mount", "-p", "/var/run/zfs/ums-test.pid"])
    deadline = time.monotonic() + 60
    while in_node(tnode, ["zpool", "list"], check=False).returncode != 0:
        assert time.monotonic() < deadline, "zfs-fuse did not come back"
        time.sleep(0.2)
    pool = f.pools[index]
    if in_node(tnode, ["zpool", "list", pool], check=False).returncode != 0:
        # Not in the daemon's cache: import it from its image as a rebooted node would.
        images = _image_dir(f.cluster.base_dir, index)
        where = images if images.is_dir() else f.cluster.base_dir
        in_node(tnode, ["zpool", "import", "-f", "-d", str(where), pool])


def wait_mailbox(f: Fleet, index: int) -> None:
    """The converge that creates alice's Maildir may be the follow-up of a coalesced one
    (not inside the API request): wait for it rather than race it."""
    maildir = f"/var/mail/vhosts/{DOMAIN}/alice/Maildir/cur"
    deadline = time.monotonic() + 90
    while f.in_node(index, ["test", "-d", maildir], check=False).returncode != 0:
        assert time.monotonic() < deadline, f"alice's Maildir never appeared on node {index}"
        time.sleep(0.5)


def send(f: Fleet, to: str, marker: str, via: int = SMTP) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "bob@outside.test", to, marker
    message.set_content(f"hello {marker}\n")
    with smtplib.SMTP(f.tnodes[via].address, 25, timeout=30) as smtp:
        smtp.send_message(message)


def wait_delivered(
    f: Fleet, index: int, marker: str, timeout: float = 90, smtp: int = SMTP
) -> None:
    folder = f"/var/mail/vhosts/{DOMAIN}/alice/Maildir/new"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f.in_node(index, ["grep", "-rl", "--", marker, folder], check=False).returncode == 0:
            return
        time.sleep(0.3)
    log = f.tnodes[smtp].path("/var/spool/postfix/maillog")
    raise AssertionError(
        f"{marker} not delivered on node {index}\n{_failed_jobs()}\n"
        f"{log.read_text() if log.exists() else ''}"
    )


def imaps_bodies(f: Fleet, index: int) -> bytes:
    imap = imaplib.IMAP4_SSL(f.tnodes[index].address, 993, ssl_context=tls(), timeout=60)
    try:
        imap.login(f"alice@{DOMAIN}", PASSWORD)
        typ, data = imap.select("INBOX")
        assert typ == "OK", data
        typ, data = imap.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK", data
        return b"".join(part[1] for part in data if isinstance(part, tuple))
    finally:
        imap.logout()


def zprops(f: Fleet, index: int, dataset: str) -> dict[str, str]:
    out = f.in_node(
        index, ["zfs", "get", "-H", "-o", "property,value", "readonly,mounted", dataset]
    ).stdout
    return dict(line.split("\t") for line in out.splitlines())


def replicated_domain(f: Fleet, client, customer_id: int) -> tuple[dict, str]:
    """``DOMAIN`` with alice on A through the API, one message delivered there, and B's
    replica synced (full stream); the domain's JSON and the message's token."""
    from replication import tasks

    domain = client.post(
        "/api/v1/mail/domains/", {"name": DOMAIN, "customer": customer_id}, format="json"
    ).json()
    response = client.post(
        "/api/v1/mail/mailboxes/",
        {"domain": domain["id"], "localPart": "alice", "password": PASSWORD, "quotaMb": 40},
        format="json",
    )
    assert response.status_code == 201, response.content
    wait_mailbox(f, A)
    token = f"before-{secrets.token_hex(4)}"
    send(f, f"alice@{DOMAIN}", token)
    wait_delivered(f, A, token)
    tasks.schedule()  # B gets its replica (full stream)
    return domain, token


def auto_failover_domain(f: Fleet, cast: Cast, **policy: Any) -> tuple[dict, str]:
    """An automatic failover policy (``policy``: more of its API fields) for the ministry
    and :func:`replicated_domain` under it, B's replica synced."""
    from replication.models import DomainReplica
    from tests.fixtures import token_client

    client = token_client(cast.sub_admin)
    response = client.post(
        "/api/v1/replication/policies/",
        {"customer": cast.ministry.pk, "autoFailover": True, **policy},
        format="json",
    )
    assert response.status_code == 201, response.content
    domain, token = replicated_domain(f, client, cast.ministry.pk)
    replica = DomainReplica.objects.get(domain_id=domain["id"], node=f.nodes[B])
    assert replica.state == DomainReplica.SYNCED, replica.last_error
    return domain, token
