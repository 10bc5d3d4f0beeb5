"""The replication fleet: IMAP node A (primary, zfs-fuse pool), an SMTP node and IMAP
node B (a pool of the same name on its own zfs-fuse), plus helpers to stop and bring back
a node with its pool, deliver mail and read it over IMAPS. Shared by the node test and
the fault test (node tests are slow: few of them, each covering a whole story)."""

from __future__ import annotations

import imaplib
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import paramiko
import pytest

from deploy.services import registry
from deploy.services.zfs import SERVICE as ZFS
from servers.models import Zone
from tests.converge.fleet import Fleet, _start_zfs, _stop_zfs, fleet, in_node, new_pool_name
from tests.converge.test_mail_flow import tls
from tests.converge.test_mail_store import PASSWORD, _failed_jobs
from tests.fixtures import Cast

A, SMTP, B = 0, 1, 2
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
        in_node(tnode, ["zpool", "import", "-f", "-d", str(f.cluster.base_dir), pool])


def wait_mailbox(f: Fleet, index: int) -> None:
    """The converge that creates alice's Maildir may be the follow-up of a coalesced one
    (not inside the API request): wait for it rather than race it."""
    maildir = f"/var/mail/vhosts/{DOMAIN}/alice/Maildir/cur"
    deadline = time.monotonic() + 90
    while f.in_node(index, ["test", "-d", maildir], check=False).returncode != 0:
        assert time.monotonic() < deadline, f"alice's Maildir never appeared on node {index}"
        time.sleep(0.5)


def send(f: Fleet, to: str, marker: str) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "bob@outside.test", to, marker
    message.set_content(f"hello {marker}\n")
    with smtplib.SMTP(f.tnodes[SMTP].address, 25, timeout=30) as smtp:
        smtp.send_message(message)


def wait_delivered(f: Fleet, index: int, marker: str, timeout: float = 90) -> None:
    folder = f"/var/mail/vhosts/{DOMAIN}/alice/Maildir/new"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f.in_node(index, ["grep", "-rl", "--", marker, folder], check=False).returncode == 0:
            return
        time.sleep(0.3)
    log = f.tnodes[SMTP].path("/var/spool/postfix/maillog")
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
