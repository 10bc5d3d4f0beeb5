"""Per-mailbox access on a real IMAP node: API -> converge -> Courier userdb, IMAP ACLs,
maildirquota and the Trash retention job, checked with imaplib/poplib against the node.

The mailboxes are created and changed through the API (``setup_mail`` and PATCH), so the
whole path database -> desired state -> converge -> node is exercised each time.
"""

from __future__ import annotations

import imaplib
import poplib
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from deploy.services.courier import policy
from tests.fixtures import Cast

from .conftest import MailNodes
from .test_mail_flow import DOMAIN, PASSWORD, assert_jobs_succeeded, setup_mail, tls

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

MAIL_ROOT = "/var/mail/vhosts"
MESSAGE = b"From: bob@outside.test\r\nSubject: %s\r\n\r\nhello\r\n"


def maildir(nodes: MailNodes, local: str) -> str:
    return f"{MAIL_ROOT}/{DOMAIN}/{local}/Maildir"


def add_mailbox(client: Any, domain: dict, local: str, **fields: Any) -> int:
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": domain["id"], "localPart": local, "password": PASSWORD, **fields},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def patch_mailbox(client: Any, local: str, **fields: Any) -> None:
    from mail.models import Mailbox

    mailbox = Mailbox.objects.get(email=f"{local}@{DOMAIN}")
    response = client.patch(
        reverse("mail-mailbox-detail", args=[mailbox.pk]), fields, format="json"
    )
    assert response.status_code == 200, response.content
    assert_jobs_succeeded()


@contextmanager
def imaps(nodes: MailNodes, local: str) -> Iterator[imaplib.IMAP4_SSL]:
    imap = imaplib.IMAP4_SSL(nodes.imap.address, 993, ssl_context=tls(), timeout=60)
    try:
        imap.login(f"{local}@{DOMAIN}", PASSWORD)
        yield imap
    finally:
        with suppress(imaplib.IMAP4.error, OSError):
            imap.logout()


def flags(imap: imaplib.IMAP4, num: bytes) -> bytes:
    typ, data = imap.fetch(num, "(FLAGS)")
    assert typ == "OK", data
    return data[0]


def deliver(nodes: MailNodes, local: str, name: str, subject: str, folder: str = "") -> str:
    """Put a message file into a Maildir folder as the mail user, the way a delivery
    agent does (the SMTP path itself is covered by test_mail_flow)."""
    target = f"{maildir(nodes, local)}/{folder}new/{name}"
    nodes.imap.exec_in_node(
        [
            "setpriv",
            "--reuid",
            "5000",
            "--regid",
            "5000",
            "--clear-groups",
            "sh",
            "-c",
            'mkdir -p "$(dirname "$1")/../cur" "$(dirname "$1")/../tmp" "$(dirname "$1")" '
            '&& cat > "$1"',
            "sh",
            target,
        ],
        input=(MESSAGE % subject.encode()).decode(),
    )
    return target


def run_policy(nodes: MailNodes, *args: str) -> Any:
    """The installed node script, run as cron runs it (no cron daemon in the harness)."""
    return nodes.imap.exec_in_node(["sh", policy.POLICY_SCRIPT, *args], check=False, timeout=120)


def test_read_only_and_cannot_delete_are_enforced_by_imap_acls_and_deny_pop3(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    client, domain = setup_mail(cast)
    # bob keeps POP3, so port 995 stays open and alice's refusal is her own.
    add_mailbox(client, domain, "bob")
    # Before the restriction: alice has a folder of her own, and mail in INBOX.
    with imaps(mail_nodes, "alice") as imap:
        assert imap.create("INBOX.Projects")[0] == "OK"
        assert imap.append("INBOX.Projects", None, None, MESSAGE % b"project")[0] == "OK"
    deliver(mail_nodes, "alice", "1700000000.M1P1.node", "first")

    patch_mailbox(client, "alice", readOnly=True)
    with imaps(mail_nodes, "alice") as imap:
        assert imap.select("INBOX")[0] == "OK"
        _typ, data = imap.fetch(b"1", "(RFC822)")
        assert b"Subject: first" in data[0][1]
        # \Seen is the reader's own state; \Deleted and \Flagged are refused (Courier
        # answers OK but leaves the flags as they were).
        imap.store(b"1", "+FLAGS", "(\\Seen)")
        imap.store(b"1", "+FLAGS", "(\\Deleted \\Flagged)")
        assert b"\\Seen" in flags(imap, b"1")
        assert b"\\Deleted" not in flags(imap, b"1")
        assert b"\\Flagged" not in flags(imap, b"1")
        assert imap.expunge()[0] == "NO"
        assert imap.append("INBOX", None, None, MESSAGE % b"appended")[0] == "NO"
        assert imap.create("INBOX.New")[0] == "NO"
        assert imap.delete("INBOX.Projects")[0] == "NO"
        # The folder made before the restriction is locked too.
        assert imap.append("INBOX.Projects", None, None, MESSAGE % b"more")[0] == "NO"
        # The owner of a Courier mailbox always holds the administer right; the lock is
        # what stops it from giving itself the other rights back.
        assert imap.setacl("INBOX", "owner", "aceilrstwx")[0] == "NO"
        assert imap.setacl("INBOX.Projects", "owner", "aceilrstwx")[0] == "NO"
        _typ, rights = imap.myrights("INBOX")
        assert b'"alrs"' in rights[0] or b" alrs" in rights[0], rights
        assert imap.select("INBOX.Projects")[0] == "OK"
        assert imap.fetch(b"1", "(RFC822)")[0] == "OK"
    with pytest.raises(poplib.error_proto):
        pop = poplib.POP3_SSL(mail_nodes.imap.address, 995, context=tls(), timeout=60)
        try:
            pop.user(f"alice@{DOMAIN}")
            pop.pass_(PASSWORD)
        finally:
            pop.close()
    assert len(list(mail_nodes.imap.path(f"{maildir(mail_nodes, 'alice')}/cur").iterdir())) == 1

    # A folder that appears later (delivery agent, Sieve fileinto) inherits the lock
    # from INBOX at once, and the hourly job makes that unchangeable too.
    deliver(mail_nodes, "alice", "1700000001.M2P2.node", "filed", folder=".Later/")
    with imaps(mail_nodes, "alice") as imap:
        assert imap.select("INBOX.Later")[0] == "OK"
        assert imap.expunge()[0] == "NO"
    result = run_policy(mail_nodes, "enforce")
    assert result.returncode == 0, result.stderr
    with imaps(mail_nodes, "alice") as imap:
        assert imap.setacl("INBOX.Later", "owner", "aceilrstwx")[0] == "NO"

    # Cannot delete: reads, files new mail in, creates folders, but deletes nothing.
    patch_mailbox(client, "alice", readOnly=False, canDelete=False)
    with imaps(mail_nodes, "alice") as imap:
        assert imap.create("INBOX.Archive")[0] == "OK"
        assert imap.append("INBOX.Archive", None, None, MESSAGE % b"archived")[0] == "OK"
        assert imap.select("INBOX.Archive")[0] == "OK"
        assert imap.copy(b"1", "INBOX")[0] == "OK"  # moving in works
        assert imap.select("INBOX")[0] == "OK"
        _typ, data = imap.search(None, "ALL")
        assert len(data[0].split()) == 2
        imap.store(b"1", "+FLAGS", "(\\Deleted)")
        assert b"\\Deleted" not in flags(imap, b"1")
        assert imap.expunge()[0] == "NO"
        assert imap.delete("INBOX.Projects")[0] == "NO"
        assert imap.setacl("INBOX", "owner", "aceilrstwx")[0] == "NO"
    with pytest.raises(poplib.error_proto):
        pop = poplib.POP3_SSL(mail_nodes.imap.address, 995, context=tls(), timeout=60)
        try:
            pop.user(f"alice@{DOMAIN}")
            pop.pass_(PASSWORD)
        finally:
            pop.close()

    # Lifting the restriction gives every right back, POP3 included.
    patch_mailbox(client, "alice", canDelete=True)
    with imaps(mail_nodes, "alice") as imap:
        assert imap.select("INBOX")[0] == "OK"
        imap.store(b"1", "+FLAGS", "(\\Deleted)")
        assert imap.expunge()[0] == "OK"
        assert imap.delete("INBOX.Archive")[0] == "OK"
    pop = poplib.POP3_SSL(mail_nodes.imap.address, 995, context=tls(), timeout=60)
    try:
        pop.user(f"alice@{DOMAIN}")
        pop.pass_(PASSWORD)
        assert pop.stat()[0] == 1
    finally:
        pop.quit()


def _port_open(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(5)
        return sock.connect_ex((address, port)) == 0


def test_unencrypted_imap_is_refused_per_mailbox_while_imaps_works(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    client, domain = setup_mail(cast)
    address = mail_nodes.imap.address
    assert not _port_open(address, 143)  # denied by default: no listener at all
    # bob may use port 143, so it opens; alice keeps the default (IMAPS only).
    add_mailbox(client, domain, "bob", protocolAccess={"imap": "allow"})
    assert_jobs_succeeded()
    assert _port_open(address, 143)

    imap = imaplib.IMAP4(address, 143, timeout=60)
    try:
        imap.login(f"bob@{DOMAIN}", PASSWORD)
        assert imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()
    # Both ports share authlib's "imap" service, so Courier tells them apart only after
    # LOGIN: it answers with BYE and closes; nothing can be read.
    imap = imaplib.IMAP4(address, 143, timeout=60)
    try:
        imap.login(f"alice@{DOMAIN}", PASSWORD)
        with pytest.raises(imaplib.IMAP4.abort, match="insecure connection"):
            imap.select("INBOX")
    finally:
        imap.shutdown()
    with imaps(mail_nodes, "alice") as secure:
        assert secure.select("INBOX")[0] == "OK"


def test_append_over_quota_is_refused(cast: Cast, mail_nodes: MailNodes) -> None:
    client, _domain = setup_mail(cast)
    patch_mailbox(client, "alice", quotaMb=1)
    body = b"x" * 600_000
    big = MESSAGE % b"big" + body
    with imaps(mail_nodes, "alice") as imap:
        assert imap.append("INBOX", None, None, big)[0] == "OK"
        typ, data = imap.append("INBOX", None, None, big)
        assert typ == "NO" and b"quota" in data[0].lower(), data
        assert imap.select("INBOX")[0] == "OK"
        _typ, found = imap.search(None, "ALL")
        assert len(found[0].split()) == 1
    # Raising the quota lets the same message in.
    patch_mailbox(client, "alice", quotaMb=5)
    with imaps(mail_nodes, "alice") as imap:
        assert imap.append("INBOX", None, None, big)[0] == "OK"


def test_trash_purge_job_deletes_only_trash_messages_older_than_the_retention(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    client, _domain = setup_mail(cast)
    patch_mailbox(client, "alice", retentionDays=10)
    node = mail_nodes.imap
    listing = node.path(policy.POLICY_LIST).read_text()
    assert f"mailbox\t10\tfull\t{1024**3}\t{maildir(mail_nodes, 'alice')}\n" in listing
    assert node.path(policy.CRON_FILE).read_text() == policy.CRON_ENTRY

    old_trash = deliver(mail_nodes, "alice", "1600000000.M1P1.node", "old-trash", ".Trash/")
    old_inbox = deliver(mail_nodes, "alice", "1600000001.M2P2.node", "old-inbox")
    # ctime is what counts (the time a message landed in Trash) and cannot be set back:
    # tell the two Trash messages apart by a moment between them instead.
    time.sleep(2.1)
    between = int(time.time())
    time.sleep(1.1)
    fresh_trash = deliver(mail_nodes, "alice", "1600000002.M3P3.node", "fresh-trash", ".Trash/")

    # Ten days minus a minute after "between": nothing is old enough yet.
    result = run_policy(mail_nodes, "purge", "--now", str(between + 10 * 86400 - 60))
    assert result.returncode == 0, result.stderr
    assert node.path(old_trash).exists()

    result = run_policy(mail_nodes, "purge", "--now", str(between + 10 * 86400))
    assert result.returncode == 0, result.stderr
    assert not node.path(old_trash).exists()
    assert node.path(fresh_trash).exists()
    assert node.path(old_inbox).exists()
    assert "1 message(s) purged" in result.stdout


def test_purge_job_never_leaves_the_mail_root(cast: Cast, mail_nodes: MailNodes) -> None:
    setup_mail(cast)
    node = mail_nodes.imap
    # A directory outside the mail root, reached through a symlink inside it, and a
    # listed path with "..": both must be left alone.
    outside = "/var/mail/outside/Maildir"
    node.exec_in_node(["mkdir", "-p", f"{outside}/.Trash/cur"])
    node.exec_in_node(["sh", "-c", 'echo x > "$1"', "sh", f"{outside}/.Trash/cur/victim"])
    node.exec_in_node(["ln", "-s", "/var/mail/outside", f"{MAIL_ROOT}/{DOMAIN}/sneaky"])
    listing = (
        "ums-mailbox-policy\t1\n"
        f"root\t{MAIL_ROOT}\n"
        "owner\t5000\t5000\n"
        f"mailbox\t1\tfull\t0\t{MAIL_ROOT}/{DOMAIN}/sneaky/Maildir\n"
        f"mailbox\t1\tfull\t0\t{MAIL_ROOT}/../outside/Maildir\n"
        f"mailbox\t1\t$(touch /tmp/pwned)\t0\t{MAIL_ROOT}/{DOMAIN}/alice/Maildir\n"
    )
    node.exec_in_node(["sh", "-c", 'cat > "$1"', "sh", "/etc/courier/test-list"], input=listing)
    result = run_policy(
        mail_nodes, "purge", "--list", "/etc/courier/test-list", "--now", str(2**40)
    )
    assert result.returncode == 1
    assert "outside /var/mail/vhosts" in result.stderr
    assert "bad mode" in result.stderr
    assert node.path(f"{outside}/.Trash/cur/victim").exists()
    assert not Path("/tmp/pwned").exists()  # the node's /tmp is the host's
