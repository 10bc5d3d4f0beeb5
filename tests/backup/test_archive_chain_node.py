"""Incremental Maildir archives on real parts: an sshd IMAP node with a zfs-fuse pool and
a real S3 server (rclone).

A full archive, then two increments: new mail, a message read (``new`` -> ``cur``), one
re-flagged, one deleted, between each. The increments on the server's disk are about the
new mail, not the domain (object sizes); the middle point read back (``archive_fetch``)
holds exactly that point's messages with their flags; alice is restored from it into
"Restored <date>" and the domain in place (the message deleted after it comes back),
then one folder of it (into "Restored <date>" and in place), and the chain is verified;
the fourth pass (a full archive every 3 passes, 1 chain kept) starts a new chain and
deletes the old one whole.
"""

from __future__ import annotations

import io
import secrets
import tarfile
from pathlib import Path

import pytest
from django.core.management import call_command

from backup import crypto
from tests.converge.test_mail_store import IMAP, PASSWORD, _failed_jobs
from tests.fixtures import Cast, token_client
from ums import jobs

from .servers import S3Server
from .test_archive_node import _ok, _open
from .test_portal import portal
from .test_snapshots_node import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    store_fleet,
    zone,
)

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "chain.example"
ROOT = f"/var/mail/vhosts/{DOMAIN}"
WRITE = (
    "import base64, os, sys; open(sys.argv[1], 'wb').write(sys.argv[2].encode() + "
    "b'\\n\\n' + base64.b64encode(os.urandom(int(sys.argv[3]))))"
)


@pytest.fixture(autouse=True)
def _own_var_dir(settings, tmp_path: Path) -> None:
    settings.VAR_DIR = tmp_path


def _folder(s3: S3Server) -> Path:
    return s3.root / "backups" / "ums-archive" / DOMAIN


def _manifest(s3: S3Server) -> dict:
    import json

    return json.loads(_open(_folder(s3) / "manifest.json"))


def _messages_in_tar(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {
            m.name: tar.extractfile(m).read()
            for m in tar
            if m.isreg() and m.name.split("/")[-2] in ("cur", "new")
        }


def test_base_and_two_increments_restore_the_middle_point_exactly(
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
    alice, bob = f"{ROOT}/alice/Maildir", f"{ROOT}/bob/Maildir"
    f.in_node(IMAP, ["mkdir", "-p", *(f"{alice}/.Sent/{s}" for s in ("cur", "new", "tmp"))])
    tokens = {k: f"{k}-{secrets.token_hex(6)}" for k in ("big", "t1", "t2", "t3", "t4", "t5")}

    def put(path: str, token: str, size: int) -> None:
        f.in_node(IMAP, ["python3", "-c", WRITE, path, token, str(size)])
        f.in_node(IMAP, ["chown", f"--reference={alice}", path])

    def mv(old: str, new: str) -> None:
        f.in_node(IMAP, ["mv", old, new])

    def snapshot_and_copy() -> dict:
        _ok(client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json"))
        job = _ok(client.post(f"/api/v1/backup/offnode-settings/{setting_id}/copy-now/"))
        return job.result["target"][0]["archive"]

    response = client.post(
        "/api/v1/backup/targets/", s3_server.target_body(cast.ministry.pk), format="json"
    )
    assert response.status_code == 201, response.content
    body = {"node": f.nodes[IMAP].pk, "target": response.json()["id"], "targetFormat": "maildir"}
    response = client.post(
        "/api/v1/backup/offnode-settings/", {**body, "archiveFullEvery": 0}, format="json"
    )
    assert response.status_code == 400 and set(response.json()["errors"]) == {"archiveFullEvery"}
    response = client.post(
        "/api/v1/backup/offnode-settings/",
        {**body, "archiveFullEvery": 3, "targetKeepChains": 1},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["archiveFullEvery"] == 3
    setting_id = response.json()["id"]

    # Point A: the full archive (a 2 MB message makes the domain's bulk).
    put(f"{alice}/cur/1000.M1.n:2,S", tokens["big"], 1536 * 1024)
    put(f"{alice}/new/1001.M1.n", tokens["t1"], 100)
    put(f"{alice}/.Sent/cur/1002.M1.n:2,S", tokens["t2"], 100)
    put(f"{bob}/cur/1003.M1.n:2,S", tokens["t3"], 100)
    a = snapshot_and_copy()
    assert a["kind"] == "full"

    # Point B: new mail (20 KB), t1 read, t2 re-flagged, bob's t3 deleted.
    put(f"{alice}/new/1004.M1.n", tokens["t4"], 15 * 1024)
    mv(f"{alice}/new/1001.M1.n", f"{alice}/cur/1001.M1.n:2,S")
    mv(f"{alice}/.Sent/cur/1002.M1.n:2,S", f"{alice}/.Sent/cur/1002.M1.n:2,RS")
    f.in_node(IMAP, ["rm", f"{bob}/cur/1003.M1.n:2,S"])
    listing = f.in_node(IMAP, ["find", ROOT, "-type", "f", "-printf", "%P\\n"]).stdout
    at_b = sorted(p for p in listing.split() if p.split("/")[-2] in ("cur", "new"))
    b = snapshot_and_copy()
    assert b["kind"] == "incremental"

    # Point C: the big message deleted, t1 flagged, more new mail.
    f.in_node(IMAP, ["rm", f"{alice}/cur/1000.M1.n:2,S"])
    mv(f"{alice}/cur/1001.M1.n:2,S", f"{alice}/cur/1001.M1.n:2,FS")
    put(f"{alice}/new/1005.M1.n", tokens["t5"], 100)
    c = snapshot_and_copy()
    assert c["kind"] == "incremental"

    manifest = _manifest(s3_server)
    entries = manifest["archives"]
    assert [e["kind"] for e in entries] == ["full", "incremental", "incremental"]
    assert len({e["chain"] for e in entries}) == 1
    # Sizes of the objects on the S3 server's disk: an increment is about its new mail.
    sizes = [(s3_server.root / "backups" / e["name"]).stat().st_size for e in entries]
    assert sizes[0] > 1536 * 1024, sizes
    assert 15 * 1024 < sizes[1] < sizes[0] / 10 and sizes[2] < sizes[0] / 10, sizes
    inc1 = _messages_in_tar(_open(s3_server.root / "backups" / entries[1]["name"]))
    assert list(inc1) == ["alice/Maildir/new/1004.M1.n"]  # the renamed ones are not copied

    # The middle point read back: exactly its messages, with their flags of then.
    out = io.StringIO()
    back = tmp_path / "b.tar"
    call_command("archive_fetch", DOMAIN, str(back), "--snapshot", b["snapshot"], stdout=out)
    assert "assembled from its chain" in out.getvalue() and "(verified)" in out.getvalue()
    held = _messages_in_tar(back.read_bytes())
    assert sorted(held) == at_b
    assert held["alice/Maildir/.Sent/cur/1002.M1.n:2,RS"].startswith(tokens["t2"].encode())
    assert held["alice/Maildir/cur/1000.M1.n:2,S"].startswith(tokens["big"].encode())
    assert not [n for n in held if n.startswith("bob/")]  # bob's t3 was deleted by then

    # Alice restored from the middle point into "Restored <date>".
    from backup.models_offnode import OffnodeCopy

    row = OffnodeCopy.objects.get(domain_name=DOMAIN)
    assert row.snapshots == [a["snapshot"], b["snapshot"], c["snapshot"]]
    assert row.archive_kinds == {
        a["snapshot"]: "full",
        b["snapshot"]: "incremental",
        c["snapshot"]: "incremental",
    }
    page = portal(cast.sub_admin).get(f"/backup/domains/{domain_id}/snapshots/").content.decode()
    assert page.count(">increment</span>") == 2 and b["snapshot"] in page
    url = f"/api/v1/backup/offnode-copies/{row.pk}/restore/"
    job = _ok(client.post(url, {"mailbox": ids["alice"], "snapshot": b["snapshot"]}, format="json"))
    (restored,) = job.result["folders"].values()
    found = f.in_node(IMAP, ["grep", "-rl", tokens["t2"], f"{alice}/.{restored}.Sent"]).stdout
    assert found.strip().endswith(":2,RS"), (found, job.log)
    for key in ("big", "t1", "t4"):
        assert f.in_node(IMAP, ["grep", "-rl", tokens[key], f"{alice}/.{restored}"]).stdout
    gone = f.in_node(IMAP, ["grep", "-rl", tokens["t5"], f"{alice}/.{restored}"], check=False)
    assert gone.returncode != 0  # t5 came after the middle point

    # The whole domain in place from the middle point: the big message deleted since
    # comes back; bob's t3, deleted before it, does not.
    job = _ok(client.post(url, {"snapshot": b["snapshot"], "mode": "in_place"}, format="json"))
    big = f.in_node(IMAP, ["grep", "-l", tokens["big"], "-r", f"{alice}/cur"]).stdout
    assert big.strip(), job.log
    t3 = f.in_node(IMAP, ["grep", "-rl", tokens["t3"], bob], check=False)
    assert t3.returncode != 0

    # One folder from the middle point (an increment: Sent's message is in the full
    # archive's tar under its old name, renamed by B's index): into "Restored <date>"
    # alone, then in place, where its flags go back to the point's.
    sent = {"mailbox": ids["alice"], "folder": "Sent", "snapshot": b["snapshot"]}
    job = _ok(client.post(url, sent, format="json"))
    (only,) = job.result["folders"].values()
    assert job.result["messages"] == 1, job.log
    found = f.in_node(IMAP, ["grep", "-rl", tokens["t2"], f"{alice}/.{only}.Sent"]).stdout
    assert found.strip().endswith("/cur/1002.M1.n:2,RS"), (found, job.log)
    folders = f.in_node(IMAP, ["ls", "-a", "-1", alice]).stdout.splitlines()
    assert [n for n in folders if n.startswith(f".{only}")] == [f".{only}", f".{only}.Sent"]
    inbox = f.in_node(IMAP, ["grep", "-rl", tokens["t4"], f"{alice}/.{only}"], check=False)
    assert inbox.returncode != 0  # the folder alone, not the mailbox
    mv(f"{alice}/.Sent/cur/1002.M1.n:2,RS", f"{alice}/.Sent/cur/1002.M1.n:2,")
    job = _ok(client.post(url, {**sent, "mode": "in_place"}, format="json"))
    live = f.in_node(IMAP, ["ls", f"{alice}/.Sent/cur"]).stdout.split()
    assert live == ["1002.M1.n:2,RS"], (live, job.log)

    # The chain verified where it lies: every tar and index read back from the S3
    # server, nothing written on the node.
    job = _ok(client.post(f"/api/v1/backup/offnode-settings/{setting_id}/verify/"))
    row.refresh_from_db()
    assert row.verify_ok is True and job.result["objects"] == 3, job.log

    # The fourth pass starts a new chain; keeping one chain deletes the old one whole
    # (it was kept whole until then: its increments need their base).
    assert len(list(_folder(s3_server).iterdir())) == 7  # 3 tars, 3 indexes, manifest
    put(f"{alice}/new/1006.M1.n", "t6", 100)
    d = snapshot_and_copy()
    assert d["kind"] == "full"
    (entry,) = _manifest(s3_server)["archives"]
    assert entry["kind"] == "full" and entry["snapshot"] == d["snapshot"]
    stored = sorted(p.name for p in _folder(s3_server).iterdir())
    assert len(stored) == 3 and "manifest.json" in stored, stored
    for path in _folder(s3_server).iterdir():  # nothing in clear on the server
        assert path.read_bytes().startswith(crypto.MAGIC)
