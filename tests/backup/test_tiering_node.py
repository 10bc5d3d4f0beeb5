"""Storage tiering end to end on a real IMAP node (zfs-fuse pool in the node's namespace,
mail delivered by Postfix, read over IMAPS from Courier):

* a folder tier (the NFS/CIFS case: the kernel here has neither, so a plain folder
  stands for the mount): "Tier now" moves the idle messages, Courier serves them byte
  for byte as before (body, size, INTERNALDATE, flags), the young Inbox message stays,
  the quota recount is unchanged, bytes per tier show per domain, a read brings nothing
  back until the policy says so, and a restore from a snapshot taken after tiering gives
  expunged tiered messages back;
* an S3 tier: the pass mounts the bucket of an S3 backup target (real ``rclone serve s3``)
  with s3fs inside the node, and the same holds; the mover is SIGKILLed mid-way and the
  next pass leaves every message exactly once, reading back as before.

The controller's clock is moved forward (``tiering.clock``, the one value the node measures
idleness against): ctime cannot be set back, and waiting days is not a test.
"""

from __future__ import annotations

import imaplib
import json
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from audit.models import AuditRecord
from backup import tiering
from backup.models import BackupTarget, Snapshot
from backup.tier_node import PROGRAM
from tests.backup.servers import rclone_s3
from tests.backup.test_restore_node import imaps
from tests.backup.test_snapshots_node import store_fleet  # noqa: F401  (fixture)
from tests.converge.conftest import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    zone,
)
from tests.converge.fleet import Fleet
from tests.converge.test_mail_store import IMAP, PASSWORD, _failed_jobs, _send, _wait_in_node
from tests.fixtures import Cast, token_client
from ums import jobs
from ums.models import Job

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
QUOTA_MB = 40


def _setup(client, cast: Cast, domain: str) -> tuple[int, str]:
    response = client.post(
        "/api/v1/mail/domains/", {"name": domain, "customer": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    domain_id = response.json()["id"]
    response = client.post(
        "/api/v1/mail/mailboxes/",
        {"domain": domain_id, "localPart": "alice", "password": PASSWORD, "quotaMb": QUOTA_MB},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert not _failed_jobs(), _failed_jobs()
    return domain_id, f"/var/mail/vhosts/{domain}/alice/Maildir"


def _wait_maildir(f: Fleet, maildir: str) -> None:
    deadline = time.monotonic() + 90
    while f.in_node(IMAP, ["test", "-d", f"{maildir}/cur"], check=False).returncode:
        assert time.monotonic() < deadline, f"{maildir} never appeared"
        time.sleep(0.5)


def fetch_all(imap: imaplib.IMAP4, folder: str) -> dict[str, dict[str, bytes]]:
    """``{subject: {body, size, date, flags}}`` of a folder, read without setting \\Seen."""
    typ, data = imap.select(f'"{folder}"', readonly=True)
    assert typ == "OK", data
    typ, data = imap.fetch("1:*", "(FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    if typ != "OK" or data == [None]:
        return {}
    found = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, body = item
        subject = re.search(rb"^Subject: (.*?)\r?$", body, re.M).group(1).decode()
        found[subject] = {
            "body": body,
            "size": re.search(rb"RFC822.SIZE (\d+)", head).group(1),
            "date": re.search(rb'INTERNALDATE "([^"]+)"', head).group(1),
            "flags": re.search(rb"FLAGS \(([^)]*)\)", head).group(1),
        }
    return found


def links(f: Fleet, maildir: str) -> list[str]:
    out = f.in_node(IMAP, ["find", maildir, "-type", "l"]).stdout
    return sorted(line for line in out.splitlines() if line)


def quota_recount(f: Fleet, maildir: str) -> list[int]:
    """Courier's own recount of the Maildir (``maildirmake -q`` rewrites maildirsize):
    [bytes, messages] summed over its lines."""
    f.in_node(IMAP, ["rm", "-f", f"{maildir}/maildirsize"])
    f.in_node(IMAP, ["maildirmake", "-q", f"{QUOTA_MB * 1024 * 1024}S", maildir])
    lines = f.in_node(IMAP, ["cat", f"{maildir}/maildirsize"]).stdout.splitlines()
    assert lines[0] == f"{QUOTA_MB * 1024 * 1024}S", lines
    total = [0, 0]
    for line in lines[1:]:
        size, count = line.split()
        total[0] += int(size)
        total[1] += int(count)
    return total


def _tier_now(client, node_id: int) -> Job:
    response = client.post(f"/api/v1/backup/mail-stores/{node_id}/tier-now/", format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    return job


def _snapshot_now(client, domain_id: int) -> Snapshot:
    response = client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")
    assert response.status_code == 202, response.content
    assert Job.objects.get(pk=response.json()["id"]).status == Job.SUCCEEDED
    snap = Snapshot.objects.filter(domain_id=domain_id, tier="manual").latest("taken_at")
    return snap


def _restore_in_place(client, snap: Snapshot, mailbox_id: int, folder: str) -> Job:
    response = client.post(
        "/api/v1/backup/restores/",
        {"snapshot": snap.pk, "mailbox": mailbox_id, "folder": folder, "mode": "in_place"},
        format="json",
    )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    return job


def _expunge_all(f: Fleet, address: str, folder: str) -> None:
    with imaps(f, address) as imap:
        imap.select(f'"{folder}"')
        imap.store("1:*", "+FLAGS", "(\\Deleted)")
        imap.expunge()
        imap.close()


def test_folder_tier_reads_back_and_restores(
    cast: Cast,
    store_fleet: Fleet,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs.load_handlers()
    f = store_fleet
    imap_node = f.nodes[IMAP]
    client = token_client(cast.sub_admin)
    domain = "tierfolder.example"
    domain_id, maildir = _setup(client, cast, domain)
    mailbox_id = client.get(f"/api/v1/mail/mailboxes/?domain={domain_id}").json()["results"][0][
        "id"
    ]
    alice = f"alice@{domain}"
    old_token, archive_token, young_token = (
        f"{name}-{secrets.token_hex(4)}" for name in ("old", "archive", "young")
    )
    _wait_maildir(f, maildir)
    _send(f, alice, old_token)
    _wait_in_node(f, f"{maildir}/new", old_token)
    with imaps(f, alice) as imap:
        assert imap.create("INBOX.Archive")[0] == "OK"
        # Binary-ish body: every byte value a message may carry, long lines, CRLF.
        payload = bytes(range(32, 127)) * 40
        message = (
            f"From: bob@outside.test\r\nSubject: {archive_token}\r\n\r\n".encode()
            + payload
            + b"\r\n"
        )
        date = imaplib.Time2Internaldate(time.time() - 400 * 86400)
        assert imap.append("INBOX.Archive", "(\\Flagged)", date, message)[0] == "OK"
        imap.select("INBOX")
        imap.store("1:*", "+FLAGS", "(\\Seen)")
        imap.close()
    time.sleep(2)
    boundary = time.time()  # everything above is older than this, the young message newer
    time.sleep(2)
    _send(f, alice, young_token)
    _wait_in_node(f, f"{maildir}/new", young_token)
    with imaps(f, alice) as imap:
        before = {**fetch_all(imap, "INBOX"), **fetch_all(imap, "INBOX.Archive")}
    assert set(before) == {old_token, archive_token, young_token}
    quota_before = quota_recount(f, maildir)

    tier = f"/srv/ums-tier-test-{secrets.token_hex(4)}"
    f.in_node(IMAP, ["mkdir", "-p", tier])
    try:
        response = client.patch(
            f"/api/v1/backup/mail-stores/{imap_node.pk}/",
            {"tierDays": 1, "tierKind": "folder", "tierPath": tier},
            format="json",
        )
        assert response.status_code == 200, response.content
        assert response.json()["own"]["tierDays"] == 1
        # One day after the boundary: the first two are idle, the young one is not.
        monkeypatch.setattr(tiering, "clock", lambda: boundary + 86400)
        job = _tier_now(client, imap_node.pk)
        assert job.result["tiered"] == 2, job.result
        assert job.progress_total == 2 and job.progress_done == 2
        tiered = links(f, maildir)
        assert len(tiered) == 2, tiered
        for link in tiered:
            target = f.in_node(IMAP, ["readlink", link]).stdout.strip()
            assert target.startswith(f"{tier}/{domain}/alice/"), target
        # The young Inbox message stays a plain file on the store (grep -r skips links).
        young = f.in_node(IMAP, ["grep", "-rl", young_token, maildir]).stdout.split()
        assert len(young) == 1 and young[0] not in tiered

        # Courier serves the tiered messages exactly as before.
        with imaps(f, alice) as imap:
            after = {**fetch_all(imap, "INBOX"), **fetch_all(imap, "INBOX.Archive")}
        assert after == before
        assert quota_recount(f, maildir) == quota_before

        # Bytes per tier per domain, from the pass's own measurement.
        rows = client.get(f"/api/v1/backup/tier-usage/?domain={domain_id}").json()["results"]
        assert len(rows) == 1
        row = rows[0]
        tier_size = int(before[old_token]["size"]) + int(before[archive_token]["size"])
        assert (row["tierMessages"], row["primaryMessages"]) == (2, 1), row
        # Postfix's files use LF, Courier reports CRLF sizes: compare with the node's bytes.
        on_tier = f.in_node(IMAP, ["du", "-b", "-s", tier]).stdout.split()[0]
        assert row["tierBytes"] <= int(on_tier) and row["tierBytes"] <= tier_size, row
        assert row["tierBytes"] > len(payload)

        # A read brings nothing back (no recall in the policy); a pass again tiers nothing.
        time.sleep(3)
        with imaps(f, alice) as imap:
            imap.select('"INBOX.Archive"')
            assert imap.store("1:*", "+FLAGS", "(\\Seen)")[0] == "OK"
            imap.close()
        assert _tier_now(client, imap_node.pk).result["tiered"] == 0
        assert len(links(f, maildir)) == 2

        # Backups: a snapshot taken now holds links; the user expunges both tiered
        # messages; a restore from that snapshot brings their bytes back.
        snap = _snapshot_now(client, domain_id)
        _expunge_all(f, alice, "INBOX.Archive")
        with imaps(f, alice) as imap:
            imap.select("INBOX")
            _typ, data = imap.search(None, "SUBJECT", old_token)
            imap.store(data[0].decode().replace(" ", ","), "+FLAGS", "(\\Deleted)")
            imap.expunge()
            imap.close()
        assert links(f, maildir) == []
        _restore_in_place(client, snap, mailbox_id, "INBOX")
        _restore_in_place(client, snap, mailbox_id, "Archive")
        assert links(f, maildir) == []  # plain files again
        with imaps(f, alice) as imap:
            restored = {**fetch_all(imap, "INBOX"), **fetch_all(imap, "INBOX.Archive")}
        assert set(restored) == set(before)
        for token in before:
            assert restored[token]["body"] == before[token]["body"], token
            assert restored[token]["size"] == before[token]["size"], token

        # Recall on: tier everything (a later clock), then a flag change brings one back.
        response = client.patch(
            f"/api/v1/backup/mail-stores/{imap_node.pk}/", {"tierRecall": True}, format="json"
        )
        assert response.status_code == 200, response.content
        monkeypatch.setattr(tiering, "clock", lambda: time.time() + 2 * 86400)
        assert _tier_now(client, imap_node.pk).result["tiered"] == 3
        time.sleep(3)
        with imaps(f, alice) as imap:
            imap.select("INBOX")
            _typ, data = imap.search(None, "SUBJECT", young_token)
            assert imap.store(data[0].decode(), "+FLAGS", "(\\Flagged)")[0] == "OK"
            imap.close()
        result = _tier_now(client, imap_node.pk).result
        assert result["recalled"] == 1 and result["tiered"] == 0, result
        remaining = links(f, maildir)
        young = f.in_node(IMAP, ["grep", "-rl", young_token, maildir]).stdout.split()
        assert len(remaining) == 2 and len(young) == 1 and young[0] not in remaining
        copies = f.in_node(IMAP, ["find", tier, "-type", "f"]).stdout.split()
        assert len([c for c in copies if "/tierfolder.example/" in c]) >= 2
        with imaps(f, alice) as imap:
            final = {**fetch_all(imap, "INBOX"), **fetch_all(imap, "INBOX.Archive")}
        for token in before:
            assert final[token]["body"] == before[token]["body"], token
        assert AuditRecord.objects.filter(action=tiering.AUDIT_TIER_NOW).count() == 4

        # A permanent purge finds the tier copies on the tier itself (over SSH) and
        # deletes them.
        from backup.tier_holder import holder
        from mail.models import Domain

        domain_row = Domain.objects.get(pk=domain_id)
        found = holder.find(domain_row, "alice")
        assert len(found) == 1 and found[0].description.startswith("2 tiered"), found
        holder.destroy(found[0], domain_row, "alice", lambda line: None)
        assert holder.find(domain_row, "alice") == []
        assert f.in_node(IMAP, ["find", tier, "-type", "f"]).stdout.split() == []
    finally:
        f.in_node(IMAP, ["rm", "-rf", tier], check=False)


# Writes bulk messages into the Maildir as the mail user would (a test's seeding only).
SEED = r"""
import os, sys
folder, count = sys.argv[1], int(sys.argv[2])
st = os.stat(os.path.join(folder, "cur"))
for i in range(count):
    path = os.path.join(folder, "cur", "%d.M%dP1.seed:2,S" % (1733000000 + i, i))
    with open(path, "w") as handle:
        handle.write("Subject: bulk %d\n\n" % i + ("line %d\n" % i) * 300)
    os.chown(path, st.st_uid, st.st_gid)
"""
BULK = 300


def test_s3_tier_mounted_with_s3fs_and_mover_killed_midway(
    cast: Cast,
    store_fleet: Fleet,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    jobs.load_handlers()
    f = store_fleet
    imap_node = f.nodes[IMAP]
    client = token_client(cast.sub_admin)
    domain = "tiers3.example"
    domain_id, maildir = _setup(client, cast, domain)
    mailbox_id = client.get(f"/api/v1/mail/mailboxes/?domain={domain_id}").json()["results"][0][
        "id"
    ]
    alice = f"alice@{domain}"
    _wait_maildir(f, maildir)
    token = f"s3-{secrets.token_hex(4)}"
    _send(f, alice, token)
    _wait_in_node(f, f"{maildir}/new", token)
    f.in_node(IMAP, ["python3", "-c", SEED, maildir, str(BULK)])
    with imaps(f, alice) as imap:
        before = fetch_all(imap, "INBOX")
    assert len(before) == BULK + 1
    s3_root = tmp_path / "s3"
    (s3_root / "tierbucket").mkdir(parents=True)
    mount_point = None
    with rclone_s3(s3_root, host=f.cluster.bridge_address) as server:
        target = BackupTarget.objects.create(
            customer=cast.ministry,
            customer_path=cast.ministry.path,
            name="tier bucket",
            kind="s3",
            s3_endpoint=server.url,
            s3_bucket="tierbucket",
            s3_access_key=server.access_key,
            s3_secret_key=server.secret_key,
        )
        response = client.patch(
            f"/api/v1/backup/mail-stores/{imap_node.pk}/",
            {"tierDays": 30, "tierKind": "s3", "tierTarget": target.pk},
            format="json",
        )
        assert response.status_code == 200, response.content
        monkeypatch.setattr(tiering, "clock", lambda: time.time() + 31 * 86400)
        mount_point = f"{tiering.MOUNT_ROOT}/s3-{target.pk}"
        try:
            # The mover, started as the job would start it, SIGKILLed once it is under way.
            from deploy.models import DomainPlacement

            assert DomainPlacement.objects.filter(domain_id=domain_id).exists()
            row = imap_node_settings(imap_node)
            owner = f.in_node(IMAP, ["stat", "-c", "%u %g", "/var/mail/vhosts"]).stdout.split()
            args = {
                "op": "tier",
                "root": "/var/mail/vhosts",
                "mount": tiering.mount_spec(row, (int(owner[0]), int(owner[1]))),
                "lock_dir": tiering.MOUNT_ROOT,
                "domains": [domain],
                "idle_days": 30,
                "now": tiering.clock(),
                "recall": False,
                "budget": 600,
            }
            f.in_node(IMAP, ["mkdir", "-p", tiering.MOUNT_ROOT])
            tnode = f.tnodes[IMAP]
            prefix = ["nsenter", "-t", str(tnode.pid), "-m", "-u", "-n"]
            mover = subprocess.Popen(
                [*prefix, "python3", "-c", PROGRAM],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            mover.stdin.write(json.dumps(args).encode())
            mover.stdin.close()
            deadline = time.monotonic() + 120
            while len(links(f, maildir)) < 20:
                assert mover.poll() is None, mover.stdout.read().decode()
                assert time.monotonic() < deadline, "the mover made no progress"
                time.sleep(0.1)
            mover.kill()  # SIGKILL; nsenter exec'd the program, so this is the mover itself
            mover.wait()
            partial = len(links(f, maildir))
            assert 20 <= partial < BULK + 1, partial

            job = _tier_now(client, imap_node.pk)
            assert job.result["tiered"] + partial >= BULK + 1, job.result
            tiered = links(f, maildir)
            assert len(tiered) == BULK + 1
            assert all(
                f.in_node(IMAP, ["readlink", p]).stdout.startswith(mount_point) for p in tiered
            )
            # The bytes are objects in the bucket (rclone serves the folder).
            objects = [p for p in (s3_root / "tierbucket").rglob("*") if p.is_file()]
            assert len([p for p in objects if not p.name.startswith(".")]) >= BULK + 1
            with imaps(f, alice) as imap:
                after = fetch_all(imap, "INBOX")
            assert after == before  # every message once, byte for byte

            # Restore from a snapshot taken after tiering: follows the links into the tier.
            snap = _snapshot_now(client, domain_id)
            _expunge_all(f, alice, "INBOX")
            _restore_in_place(client, snap, mailbox_id, "INBOX")
            with imaps(f, alice) as imap:
                restored = fetch_all(imap, "INBOX")
            assert set(restored) == set(before)
            assert all(restored[k]["body"] == before[k]["body"] for k in before)
        finally:
            if mount_point:
                f.in_node(IMAP, ["fusermount", "-u", mount_point], check=False)


def imap_node_settings(node):
    from backup.models import MailStoreSettings

    return MailStoreSettings.objects.select_related("tier_target").get(node=node)
