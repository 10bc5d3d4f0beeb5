"""Storage stop and start on a real IMAP node whose mail store is a zfs-fuse pool.

Token mail is readable over IMAPS -> storage stop: Courier, the delivery agent and the
node's Postfix stop, the domain's dataset is unmounted, IMAPS is refused, and mail sent
meanwhile waits deferred (not bounced) in the SMTP node's queue -> storage start, cut off
right after the mount by the node's sshd (its sessions killed, its listener frozen so
the controller cannot reconnect), fails; the next reconciler pass finishes it -> the old
and the deferred mail are readable over IMAPS. The ZFS daemon itself is never touched.
Also: storage stop is refused while a backup job uses the node's mail store, and a
converge waits while the storage is stopped.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import signal
import time

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from deploy import node_storage
from deploy.actions import start_node_action
from deploy.storage_reconcile import storage_requests
from servers.models import Node
from tests.fixtures import Cast, token_client
from ums.models import Job

from .fleet import Fleet
from .test_mail_flow import tls
from .test_mail_store import (  # noqa: F401 (store_fleet is a fixture)
    IMAP,
    PASSWORD,
    SMTP,
    _send,
    _wait_in_node,
    _zfs_get,
    store_fleet,
)
from .test_node_actions import refused

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

DOMAIN = "zstore.example"


def imap_subjects(f: Fleet, local: str) -> str:
    """Every message's Subject in the INBOX, read by Courier over IMAPS."""
    address = f.tnodes[IMAP].address
    with imaplib.IMAP4_SSL(address, 993, ssl_context=tls(), timeout=20) as imap:
        imap.login(f"{local}@{DOMAIN}", PASSWORD)
        imap.select("INBOX", readonly=True)
        _typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return " ".join(
            part[1].decode(errors="replace") for part in data if isinstance(part, tuple)
        )


def storage_job(cast: Cast, node: Node, name: str) -> Job:
    job = start_node_action(actor=cast.sub_admin, node=node, name=name)
    job.refresh_from_db()
    return job


def deferred_in_log(f: Fleet, address: str, timeout: float = 60) -> str:
    log = f.tnodes[SMTP].path("/var/spool/postfix/maillog")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        lines = [line for line in text.splitlines() if f"to=<{address}>" in line]
        if any("status=deferred" in line for line in lines):
            return "\n".join(lines)
        time.sleep(0.5)
    raise AssertionError(f"no deferral for {address} in the SMTP node's log:\n{text}")


def lose_ssh(f: Fleet, index: int) -> int:
    """The node's sshd stops answering: its listener is frozen (SIGSTOP, so the
    controller cannot reconnect) and every session process is SIGKILLed. Not killed
    outright: a new listener would run in a new mount namespace, without the zfs-fuse
    mounts of the old one. Returns the listener's pid, to SIGCONT it."""
    tnode = f.tnodes[index]
    assert tnode._process is not None
    listener = tnode._process.pid
    os.kill(listener, signal.SIGSTOP)
    for pid in tnode.processes():
        try:
            with open(f"/proc/{pid}/comm") as handle:
                if handle.read().strip() != "sshd" or pid == listener:
                    continue
        except OSError:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return listener


def test_storage_stop_defers_mail_and_start_serves_it_healing_a_cut_off_start(
    cast: Cast,
    store_fleet: Fleet,  # noqa: F811
    settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f, pool = store_fleet, store_fleet.pools[IMAP]
    node = f.nodes[IMAP]
    settings.UMS_STORAGE_RETRY_SECONDS = 0
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("customer-list"), {"name": "Store", "parent": cast.government.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    response = client.post(
        reverse("mail-domain-list"),
        {"name": DOMAIN, "customer": response.json()["id"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": response.json()["id"], "localPart": "alice", "password": PASSWORD},
        format="json",
    )
    assert response.status_code == 201, response.content
    alice = f"alice@{DOMAIN}"
    dataset = f"{pool}/mail/{DOMAIN}"
    _send(f, alice, "token-before-stop")
    _wait_in_node(f, f"/var/mail/vhosts/{DOMAIN}/alice/Maildir/new", "token-before-stop")
    assert "token-before-stop" in imap_subjects(f, "alice")

    # Refused while a backup job works on this node's mail store.
    busy = Job.objects.create(
        kind="backup.snapshot_node",
        title="snapshot",
        customer_path=node.customer_path,
        status=Job.RUNNING,
        params={"node_id": node.pk},
    )
    with pytest.raises(ValidationError) as refusal:
        start_node_action(actor=cast.sub_admin, node=node, name="storage_stop")
    assert "action" in refusal.value.message_dict
    Job.objects.filter(pk=busy.pk).update(status=Job.SUCCEEDED)
    node.refresh_from_db()
    assert node.storage_requested == "running"

    # Stop: services down, the dataset unmounted (the daemon and the pool untouched).
    job = storage_job(cast, node, "storage_stop")
    assert job.status == Job.SUCCEEDED, f"{job.error}\n{job.log}"
    assert dataset in job.result["unmounted"]
    assert set(job.result["stopped"]) == {"courier", "lda", "postfix"}
    assert _zfs_get(f, dataset)["mounted"] == "no"
    assert f.in_node(IMAP, ["zpool", "list", "-H", "-o", "name", pool]).stdout.strip() == pool
    assert refused(f.tnodes[IMAP].address, 993) and refused(f.tnodes[IMAP].address, 25)
    # Idempotent. A converge queued meanwhile (it refuses while storage is stopped) may hold
    # the node's lease for a moment: the job then fails saying so, and is simply run again,
    # as the storage reconciler would.
    deadline = time.monotonic() + 120
    while True:
        again = storage_job(cast, node, "storage_stop")
        if again.status == Job.SUCCEEDED or "converge of this node is running" not in (
            again.error or ""
        ):
            break
        assert time.monotonic() < deadline, again.error
        time.sleep(1)
    assert again.status == Job.SUCCEEDED and again.result["unmounted"] == [], (
        f"{again.error}\n{again.log}"
    )
    node.refresh_from_db()
    assert (node.storage_requested, node.storage_applied) == ("stopped", "stopped")

    # Mail sent meanwhile is deferred by the SMTP node, never bounced, never written
    # beneath the unmounted dataset.
    _send(f, alice, "token-during-stop")
    lines = deferred_in_log(f, alice)
    assert "status=bounced" not in lines, lines
    beneath = f.in_node(IMAP, ["find", f"/var/mail/vhosts/{DOMAIN}", "-type", "f"])
    assert beneath.stdout.strip() == "", beneath.stdout

    # A converge meanwhile would mount and start again: it waits, with the reason.
    response = client.post(reverse("node-converge", args=[node.pk]), {}, format="json")
    assert response.status_code == 202, response.content
    converge = Job.objects.get(pk=response.json()["id"])
    assert converge.status == Job.FAILED and "storage is stopped" in converge.error
    assert _zfs_get(f, dataset)["mounted"] == "no"

    # Start, cut off after the mount: the node's sshd stops answering under the job.
    original = node_storage.mount
    frozen: list[int] = []
    settings.UMS_SSH_RETRIES = 0  # one reconnect attempt, not three

    def mount_then_lose_ssh(conn, parent):  # test-only fault around the real mount
        done = original(conn, parent)
        frozen.append(lose_ssh(f, IMAP))
        return done

    monkeypatch.setattr(node_storage, "mount", mount_then_lose_ssh)
    try:
        cut = storage_job(cast, node, "storage_start")
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert cut.status == Job.FAILED, cut.log
    assert frozen and "Error: " in cut.error, cut.error
    monkeypatch.undo()
    node.refresh_from_db()
    assert (node.storage_requested, node.storage_applied) == ("running", "stopped")
    assert node.storage_error
    assert _zfs_get(f, dataset)["mounted"] == "yes"
    assert refused(f.tnodes[IMAP].address, 993)

    # The next reconciler pass finishes the start (the mount is already done: skipped).
    assert storage_requests() == {"queued": 1}
    healed = Job.objects.filter(kind="node.storage_start").latest("pk")
    assert healed.status == Job.SUCCEEDED, f"{healed.error}\n{healed.log}"
    assert healed.result["mounted"] == [] and healed.result["started"]["courier"]
    node.refresh_from_db()
    assert (node.storage_applied, node.storage_error) == ("running", "")
    assert storage_requests() == {}

    # The deferred message arrives once the SMTP node retries (flushed: no 5-minute wait).
    f.in_node(SMTP, ["postqueue", "-f"])
    _wait_in_node(f, f"/var/mail/vhosts/{DOMAIN}/alice/Maildir/new", "token-during-stop")
    subjects = imap_subjects(f, "alice")
    assert "token-before-stop" in subjects and "token-during-stop" in subjects
    log = f.tnodes[SMTP].path("/var/spool/postfix/maillog").read_text(errors="replace")
    assert "status=bounced" not in log
