"""Restore end to end on a real IMAP node (zfs-fuse pool in the node's namespace, mail
delivered by Postfix, read back over IMAPS from Courier): a message in a folder and one
in the inbox are in a snapshot; the folder and the message are deleted by the user and
new mail arrives; restores through the API (into "Restored <date>", then in place, then
the whole domain) bring them back while the new message stays untouched."""

from __future__ import annotations

import imaplib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest

from backup.models import Snapshot
from backup.restore import restored_date
from tests.backup.test_snapshots_node import store_fleet  # noqa: F401  (fixture)
from tests.converge.conftest import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    zone,
)
from tests.converge.fleet import Fleet
from tests.converge.test_mail_flow import tls
from tests.converge.test_mail_store import IMAP, PASSWORD, _failed_jobs, _send, _wait_in_node
from tests.fixtures import Cast, token_client
from ums import jobs
from ums.models import Job

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "restorenode.example"
URL = "/api/v1/backup/restores/"


@contextmanager
def imaps(f: Fleet, user: str) -> Iterator[imaplib.IMAP4_SSL]:
    imap = imaplib.IMAP4_SSL(f.tnodes[IMAP].address, 993, ssl_context=tls(), timeout=60)
    try:
        imap.login(user, PASSWORD)
        yield imap
    finally:
        with suppress(imaplib.IMAP4.error, OSError):
            imap.logout()


def _q(folder: str) -> str:
    return '"' + folder + '"'


def subjects(imap: imaplib.IMAP4, folder: str) -> dict[str, bytes]:
    """``{subject: flags}`` of the folder's messages, as the IMAP client sees them."""
    typ, data = imap.select(_q(folder), readonly=True)
    assert typ == "OK", (folder, data)
    typ, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    if typ != "OK" or data == [None]:
        return {}
    found = {}
    for item in data:
        if isinstance(item, tuple):
            subject = item[1].decode().split(":", 1)[1].strip()
            found[subject] = item[0]
    return found


def listed(imap: imaplib.IMAP4, command: str = "LIST") -> set[str]:
    typ, data = imap.list() if command == "LIST" else imap.lsub()
    assert typ == "OK", data
    return {line.decode().rsplit(' "." ', 1)[1].strip('"') for line in data if line}


def _restore(client, **payload) -> Job:
    response = client.post(URL, payload, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert job.progress_total and job.progress_done == job.progress_total, job.log
    return job


def test_restore_over_imap_on_a_real_node(cast: Cast, store_fleet: Fleet) -> None:  # noqa: F811
    jobs.load_handlers()
    f = store_fleet
    client = token_client(cast.sub_admin)
    response = client.post(
        "/api/v1/mail/domains/", {"name": DOMAIN, "customer": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    domain_id = response.json()["id"]
    ids = {}
    for local in ("alice", "bob"):
        response = client.post(
            "/api/v1/mail/mailboxes/",
            {"domain": domain_id, "localPart": local, "password": PASSWORD, "quotaMb": 40},
            format="json",
        )
        assert response.status_code == 201, response.content
        ids[local] = response.json()["id"]
    assert not _failed_jobs(), _failed_jobs()
    alice = f"alice@{DOMAIN}"
    inbox_token = f"inbox-{secrets.token_hex(5)}"
    folder_token = f"folder-{secrets.token_hex(5)}"
    new_token = f"new-{secrets.token_hex(5)}"
    bob_token = f"bob-{secrets.token_hex(5)}"
    maildir = f"/var/mail/vhosts/{DOMAIN}/alice/Maildir"
    _send(f, alice, inbox_token)
    _send(f, f"bob@{DOMAIN}", bob_token)
    _wait_in_node(f, f"{maildir}/new", inbox_token)
    _wait_in_node(f, f"/var/mail/vhosts/{DOMAIN}/bob/Maildir/new", bob_token)
    with imaps(f, alice) as imap:
        assert imap.create("INBOX.Work")[0] == "OK"
        assert imap.subscribe("INBOX.Work")[0] == "OK"
        message = f"From: bob@outside.test\r\nSubject: {folder_token}\r\n\r\nkeep me\r\n"
        assert imap.append("INBOX.Work", "(\\Flagged)", None, message.encode())[0] == "OK"
        imap.select("INBOX")
        imap.store("1:*", "+FLAGS", "(\\Seen)")
        imap.close()

    response = client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")
    assert response.status_code == 202, response.content
    assert Job.objects.get(pk=response.json()["id"]).status == Job.SUCCEEDED
    snap = Snapshot.objects.get(domain_id=domain_id, tier="manual")
    restored = f"INBOX.Restored {restored_date(snap).isoformat()}"

    # The user deletes the folder and the inbox message; new mail arrives.
    with imaps(f, alice) as imap:
        assert imap.delete("INBOX.Work")[0] == "OK"
        imap.select("INBOX")
        imap.store("1:*", "+FLAGS", "(\\Deleted)")
        imap.expunge()
        imap.close()
    _send(f, alice, new_token)
    _wait_in_node(f, f"{maildir}/new", new_token)

    # The folders the restore form offers, read from the snapshot by a job.
    response = client.post(
        f"{URL}folders/", {"snapshot": snap.pk, "mailbox": ids["alice"]}, format="json"
    )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert job.result["folders"] == [["INBOX", 1], ["Work", 1]]

    job = _restore(client, snapshot=snap.pk, mailbox=ids["alice"])
    assert job.result["folders"] == {"alice": restored[len("INBOX.") :]}
    with imaps(f, alice) as imap:
        folders = listed(imap)
        assert {restored, f"{restored}.Work"} <= folders, folders
        assert {restored, f"{restored}.Work"} <= listed(imap, "LSUB")
        assert "INBOX.Work" not in folders
        assert set(subjects(imap, restored)) == {inbox_token}
        work = subjects(imap, f"{restored}.Work")
        assert set(work) == {folder_token} and b"\\Flagged" in work[folder_token]
        assert set(subjects(imap, "INBOX")) == {new_token}  # untouched
    # Courier's quota file was rewritten: the quota line and the restored usage.
    size = f.in_node(IMAP, ["cat", f"{maildir}/maildirsize"]).stdout.splitlines()
    assert size[0] == f"{40 * 1024 * 1024}S", size
    # No clone or staging left behind.
    names = f.in_node(IMAP, ["zfs", "list", "-H", "-o", "name"]).stdout
    assert "ums-restore-" not in names
    assert f.in_node(IMAP, ["ls", "-A", f"/var/mail/vhosts/{DOMAIN}/alice"]).stdout.split() == [
        "Maildir"
    ]

    # In place: the folder comes back where it was, the inbox message with its flag.
    _restore(client, snapshot=snap.pk, mailbox=ids["alice"], folder="Work", mode="in_place")
    _restore(client, snapshot=snap.pk, mailbox=ids["alice"], folder="INBOX", mode="in_place")
    with imaps(f, alice) as imap:
        assert "INBOX.Work" in listed(imap) and "INBOX.Work" in listed(imap, "LSUB")
        assert set(subjects(imap, "INBOX.Work")) == {folder_token}
        inbox = subjects(imap, "INBOX")
        assert set(inbox) == {new_token, inbox_token}
        assert b"\\Seen" in inbox[inbox_token]
        assert set(subjects(imap, restored)) == {inbox_token}  # the first restore stays

    # The whole domain: every mailbox gets its own Restored folder (alice's is "(2)").
    job = _restore(client, snapshot=snap.pk)
    assert job.result["folders"] == {
        "alice": f"{restored[len('INBOX.') :]} (2)",
        "bob": restored[len("INBOX.") :],
    }
    with imaps(f, f"bob@{DOMAIN}") as imap:
        assert set(subjects(imap, restored)) == {bob_token}
        assert set(subjects(imap, "INBOX")) == {bob_token}
    with imaps(f, alice) as imap:
        assert set(subjects(imap, f"{restored} (2).Work")) == {folder_token}
