"""Maildir archive copies (the off-node copy kind that honours exclusions) on real parts:
an sshd IMAP node with a zfs-fuse pool, Postfix delivering, a real S3 server (rclone).

Tokens land in alice's INBOX, in her "Trash" and "Trash.Old" folders and in bob's inbox;
"Trash" is excluded for the domain and bob as a mailbox, both through the API. A copy pass
with ``targetFormat: "maildir"`` archives the newest snapshot (read through a read-only
clone: zfs-fuse has no ``.zfs/snapshot``); the object on the S3 server's disk is
decrypted and extracted: the INBOX token is there, the Trash, Trash.Old and bob tokens
are not. A pass with nothing new adds nothing; lifting bob's exclusion archives the
next snapshot with him (a full archive each pass, keep 1); ``manage.py archive_fetch``
reads it back verified; and
alice is restored from the archive into a "Restored <date>" folder on the live node (API);
``purge_mailbox --permanent`` of alice rewrites the archive without her, bob's mail kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import tarfile
from pathlib import Path

import pytest
from django.core.management import call_command

from backup import crypto
from backup.models_offnode import OffnodeCopy
from tests.converge.test_mail_store import IMAP, PASSWORD, _failed_jobs, _send, _wait_in_node
from tests.fixtures import Cast, token_client
from ums import jobs
from ums.models import Job

from .servers import S3Server
from .test_portal import portal
from .test_snapshots_node import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    store_fleet,
    zone,
)

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "archive.example"


@pytest.fixture(autouse=True)
def _own_var_dir(settings, tmp_path: Path) -> None:
    settings.VAR_DIR = tmp_path


def _ok(response) -> Job:
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    return job


def _stored(s3: S3Server) -> list[Path]:
    folder = s3.root / "backups" / "ums-archive" / DOMAIN
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _open(path: Path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(crypto.MAGIC)  # encrypted client-side
    return crypto.decrypt_bytes(data)


def _manifest(s3: S3Server) -> dict:
    return json.loads(_open(s3.root / "backups" / "ums-archive" / DOMAIN / "manifest.json"))


def _files_with(tar_bytes: bytes, token: str) -> list[str]:
    found = []
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for member in tar.getmembers():
            if member.isfile() and token.encode() in tar.extractfile(member).read():
                found.append(member.name)
    return found


def test_archive_copy_leaves_out_excluded_mailbox_and_folder(
    cast: Cast,
    store_fleet,  # noqa: F811
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    jobs.load_handlers()
    f = store_fleet
    client = token_client(cast.sub_admin)
    response = client.post(
        "/api/v1/mail/domains/", {"name": DOMAIN, "customer": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    domain_id = response.json()["id"]
    ids = {}
    for local_part in ("alice", "bob"):
        response = client.post(
            "/api/v1/mail/mailboxes/",
            {"domain": domain_id, "localPart": local_part, "password": PASSWORD, "quotaMb": 40},
            format="json",
        )
        assert response.status_code == 201, response.content
        ids[local_part] = response.json()["id"]
    assert not _failed_jobs(), _failed_jobs()
    inbox, bob = f"inbox-{secrets.token_hex(8)}", f"bob-{secrets.token_hex(8)}"
    trash, old = f"trash-{secrets.token_hex(8)}", f"old-{secrets.token_hex(8)}"
    _send(f, f"alice@{DOMAIN}", inbox)
    _send(f, f"bob@{DOMAIN}", bob)
    maildir = f"/var/mail/vhosts/{DOMAIN}/alice/Maildir"
    _wait_in_node(f, f"{maildir}/new", inbox)
    _wait_in_node(f, f"/var/mail/vhosts/{DOMAIN}/bob/Maildir/new", bob)
    # Courier's Trash and a subfolder of it, each with a message (test setup, as root).
    for folder, token in ((".Trash", trash), (".Trash.Old", old)):
        f.in_node(
            IMAP, ["mkdir", "-p", *(f"{maildir}/{folder}/{s}" for s in ("cur", "new", "tmp"))]
        )
        f.in_node(
            IMAP,
            [
                "python3",
                "-c",
                "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                f"{maildir}/{folder}/cur/1765000000.M1P1.node:2,S",
                f"Subject: {token}\n\n{token}\n",
            ],
        )

    # Exclusions through the API: the Trash folder for the domain, bob as a mailbox.
    response = client.patch(
        f"/api/v1/backup/exclusions/domains/{domain_id}/", {"folders": ["Trash"]}, format="json"
    )
    assert response.status_code == 200, response.content
    response = client.patch(
        f"/api/v1/backup/exclusions/mailboxes/{ids['bob']}/", {"excluded": True}, format="json"
    )
    assert response.status_code == 200, response.content
    _ok(client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json"))

    response = client.post(
        "/api/v1/backup/targets/", s3_server.target_body(cast.ministry.pk), format="json"
    )
    assert response.status_code == 201, response.content
    response = client.post(
        "/api/v1/backup/offnode-settings/",
        {
            "node": f.nodes[IMAP].pk,
            "target": response.json()["id"],
            "targetFormat": "maildir",
            "targetKeepChains": 1,
            "archiveFullEvery": 1,  # every archive full: each replaces the last
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["targetFormat"] == "maildir"
    setting_id = response.json()["id"]
    response = client.patch(
        f"/api/v1/backup/offnode-settings/{setting_id}/", {"targetFormat": "zip"}, format="json"
    )
    assert response.status_code == 400 and set(response.json()["errors"]) == {"targetFormat"}

    job = _ok(client.post(f"/api/v1/backup/offnode-settings/{setting_id}/copy-now/"))
    assert job.result["target"][0]["archive"]["snapshot"]
    objects = _stored(s3_server)
    # The tar and its index (the tree, backup/archive_chain.py), and the manifest.
    assert [p.name for p in objects if p.suffix == ".tar"] and len(objects) == 3
    (entry,) = _manifest(s3_server)["archives"]
    data = _open(s3_server.root / "backups" / entry["name"])
    for path in objects:  # nothing in clear on the server
        assert inbox.encode() not in path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    assert entry["mailboxes"] == ["alice"]
    assert entry["left_out"] == {"mailboxes": ["bob"], "folders": ["Trash"]}
    assert _files_with(data, inbox) and _files_with(data, inbox)[0].startswith("alice/Maildir/new/")
    assert _files_with(data, trash) == [] and _files_with(data, old) == []
    assert _files_with(data, bob) == []
    # The archive extracts as an ordinary Maildir.
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        names = tar.getnames()
    assert "alice/Maildir/cur" in names and not [n for n in names if ".Trash" in n]
    # The clone it read through is gone.
    listed = f.in_node(IMAP, ["zfs", "list", "-H", "-o", "name"]).stdout
    assert "ums-archive" not in listed
    row = OffnodeCopy.objects.get(domain_name=DOMAIN)
    assert row.kind == OffnodeCopy.ARCHIVE and row.snapshots == [entry["snapshot"]]
    # Its folders are recorded per mailbox (the excluded Trash and its subfolder not among
    # them), and the copy's row keeps them for the restore form.
    assert set(entry["folders"]) == {"alice"}
    assert not [n for n in entry["folders"]["alice"] if n.startswith("Trash")]
    assert row.members == {entry["snapshot"]: entry["folders"]}
    rows = client.get(f"/api/v1/backup/offnode-copies/?domain={domain_id}").json()["results"]
    assert [r["kind"] for r in rows] == ["archive"]
    assert rows[0]["leftOut"] == {"mailboxes": ["bob"], "folders": ["Trash"]}
    page = portal(cast.sub_admin).get("/backup/offnode/").content.decode()
    assert "partly excluded" in page and "Trash" in page

    # Nothing new: no new archive. Bob's exclusion lifted: his Maildir was outside the
    # snapshots while excluded (backup/exclude_layout.py); the next snapshot pass moves it
    # back, and that snapshot is archived with him, replacing the first archive (keep 1).
    job = _ok(client.post(f"/api/v1/backup/offnode-settings/{setting_id}/copy-now/"))
    assert job.result["target"][0]["archive"] is None and _stored(s3_server) == objects
    response = client.patch(
        f"/api/v1/backup/exclusions/mailboxes/{ids['bob']}/", {"excluded": False}, format="json"
    )
    assert response.status_code == 200, response.content
    _ok(client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json"))
    job = _ok(client.post(f"/api/v1/backup/offnode-settings/{setting_id}/copy-now/"))
    assert job.result["target"][0]["archive"]["snapshot"] > entry["snapshot"]
    assert len(_stored(s3_server)) == 3
    assert not (s3_server.root / "backups" / entry["name"]).exists()  # replaced
    (entry,) = _manifest(s3_server)["archives"]
    assert entry["mailboxes"] == ["alice", "bob"]

    # Read back with the command: decrypted, checksum verified, an ordinary tar.
    out = io.StringIO()
    call_command("archive_fetch", DOMAIN, str(tmp_path / "back.tar"), stdout=out)
    assert "(verified)" in out.getvalue()
    data = (tmp_path / "back.tar").read_bytes()
    assert _files_with(data, inbox) and _files_with(data, bob) and not _files_with(data, trash)

    # Restore alice from the archive onto the live node: a new "Restored <date>" folder
    # with her inbox mail; the excluded Trash was never archived, so it does not come back.
    row = OffnodeCopy.objects.get(domain_name=DOMAIN)
    response = client.post(
        f"/api/v1/backup/offnode-copies/{row.pk}/restore/",
        {"mailbox": ids["alice"], "folder": "Trash"},
        format="json",
    )
    assert response.status_code == 400 and set(response.json()["errors"]) == {"folder"}
    response = client.post(
        f"/api/v1/backup/offnode-copies/{row.pk}/restore/", {"mailbox": ids["alice"]}, format="json"
    )
    job = _ok(response)
    (restored,) = job.result["folders"].values()
    assert restored.startswith("Restored ")
    found = f.in_node(IMAP, ["grep", "-rl", inbox, f"{maildir}/.{restored}"]).stdout
    assert found.strip(), job.log
    listing = f.in_node(IMAP, ["ls", "-a", "-1", maildir]).stdout.splitlines()
    assert f".{restored}" in listing and not [n for n in listing if n.startswith(f".{restored}.")]
    assert "ums-archive" not in f.in_node(IMAP, ["ls", "/var/lib/ums-archive"], check=False).stdout
    response = client.post(
        f"/api/v1/backup/offnode-copies/{row.pk}/restore/",
        {"mailbox": ids["alice"], "snapshot": "ums-manual-19700101T000000Z"},
        format="json",
    )
    assert response.status_code == 400 and set(response.json()["errors"]) == {"snapshot"}

    # Permanent deletion of alice: the archive is rewritten without her; bob's mail stays.
    out = io.StringIO()
    call_command("purge_mailbox", f"alice@{DOMAIN}", "--permanent", "--yes", stdout=out)
    assert "rewritten without the mailbox" in out.getvalue(), out.getvalue()
    assert "permanently purged" in out.getvalue()
    (after,) = _manifest(s3_server)["archives"]
    assert after["mailboxes"] == ["bob"] and after["name"] != entry["name"]
    data = _open(s3_server.root / "backups" / after["name"])
    assert hashlib.sha256(data).hexdigest() == after["sha256"]
    assert _files_with(data, bob) and not _files_with(data, inbox)
    assert len(_stored(s3_server)) == 3  # the old archive and its index are gone
    row = OffnodeCopy.objects.get(domain_name=DOMAIN, kind=OffnodeCopy.ARCHIVE)
    assert list(row.members[after["snapshot"]]) == ["bob"]  # purge dropped alice's folders
