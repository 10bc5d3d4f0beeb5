"""Excluded folders and mailboxes left out of ZFS snapshots and off-node streams, on real
parts: an sshd IMAP node with a zfs-fuse pool, Postfix and Dovecot's LDA (Sieve)
delivering, Courier-IMAP read over IMAPS, a real S3 server (rclone) as the target.

Tokens go to alice's INBOX, to her Trash (APPEND over IMAPS), to Junk (a Sieve rule
files into it) and to bob's inbox. The domain excludes Trash and Junk and bob as a
mailbox (API); "Snapshot now" first moves those into the domain's ``.ums-excluded``
child dataset (links left in place), then snapshots. The ``zfs send`` streams off-node
copies are made of (:func:`backup.offnode_zfs.send_argv`, full and incremental: what the
backup node receives) and the encrypted objects the copy job writes to the S3 target
hold the INBOX token and none of the excluded ones. Courier still lists, selects,
fetches, appends, copies and expunges across the links (moves to Trash as COPY +
EXPUNGE: this Courier has no MOVE), its Maildir++ recount counts the linked folders,
Sieve still files into Junk. Lifting the exclusion brings the folders back into the
dataset (the next snapshot holds them). The fault part kills the node program
(SIGKILL) in the middle of moving a folder of 3,000 messages; the next snapshot pass
finishes the move, every message is there once, and the snapshot leaves it out.
"""

from __future__ import annotations

import imaplib
import json
import re
import secrets
import time

import pytest

from backup import crypto, exclude_node, offnode_zfs
from deploy.services.courier import policy
from tests.converge.test_mail_flow import tls
from tests.converge.test_mail_store import IMAP, PASSWORD, _failed_jobs, _send, _wait_in_node
from tests.fixtures import Cast, token_client
from ums import jobs
from ums.models import Job

from .servers import S3Server
from .test_snapshots_node import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    store_fleet,
    zone,
)

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "exclude.example"
ROOT = f"/var/mail/vhosts/{DOMAIN}"


def _ok(response) -> Job:
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    return job


def _snap_now(client, domain_id: int) -> Job:
    return _ok(client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json"))


def _newest(f, dataset: str) -> str:
    listed = f.in_node(IMAP, ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset])
    names = sorted(line.partition("@")[2] for line in listed.stdout.split() if "@" in line)
    assert names, listed.stdout
    return names[-1]


def _stream_has(f, argv: list[str], tokens: list[str]) -> set[str]:
    """Which tokens the stream ``argv`` (run on the node) carries."""
    script = 'cmd=$1; shift; eval "$cmd" | grep -a -o -F "$@" | sort -u; exit 0'
    from shlex import join

    found = f.in_node(
        IMAP,
        ["sh", "-c", script, "sh", join(argv), *[a for t in tokens for a in ("-e", t)]],
        timeout=300,
    )
    return set(found.stdout.split())


def _imap(f) -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL(f.tnodes[IMAP].address, 993, ssl_context=tls(), timeout=60)
    imap.login(f"alice@{DOMAIN}", PASSWORD)
    return imap


def _bodies(imap: imaplib.IMAP4_SSL, folder: str) -> bytes:
    typ, data = imap.select(folder)
    assert typ == "OK", data
    if int(data[0]) == 0:
        return b""
    typ, data = imap.fetch("1:*", "(BODY.PEEK[])")
    assert typ == "OK", data
    return b"".join(part[1] for part in data if isinstance(part, tuple))


def _usage(imap: imaplib.IMAP4_SSL) -> int:
    typ, data = imap.getquotaroot("INBOX")
    assert typ == "OK", data
    text = b" ".join(x for x in data[1] if isinstance(x, bytes)).decode()
    match = re.search(r"STORAGE (\d+) \d+", text)
    assert match, data
    return int(match.group(1))


def _message(token: str, size: int = 0) -> bytes:
    pad = ("x" * 70 + "\r\n") * (size // 72)
    return (
        f"From: carol@outside.test\r\nTo: alice@{DOMAIN}\r\nSubject: {token}\r\n\r\n"
        f"{token}\r\n{pad}"
    ).encode()


def test_excluded_folders_and_mailbox_left_out_of_snapshots_and_streams(
    cast: Cast,
    store_fleet,  # noqa: F811
    s3_server: S3Server,
) -> None:
    jobs.load_handlers()
    f, pool = store_fleet, store_fleet.pools[IMAP]
    dataset = f"{pool}/mail/{DOMAIN}"
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
    rules = [
        {
            "name": "Junk",
            "match": "all",
            "conditions": [{"field": "subject", "op": "contains", "value": "junk-"}],
            "actions": [{"type": "fileinto", "folder": "Junk"}, {"type": "stop"}],
        }
    ]
    response = client.post(
        "/api/v1/mail/sieve-scripts/",
        {"mailbox": ids["alice"], "name": "Junk", "mode": "rules", "rules": rules},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert not _failed_jobs(), _failed_jobs()
    tok = {k: f"{k}-{secrets.token_hex(8)}" for k in ("inbox", "trash", "junk", "bob")}
    _send(f, f"alice@{DOMAIN}", tok["inbox"])
    _send(f, f"alice@{DOMAIN}", tok["junk"])
    _send(f, f"bob@{DOMAIN}", tok["bob"])
    _wait_in_node(f, f"{ROOT}/alice/Maildir/new", tok["inbox"])
    where = _wait_in_node(f, f"{ROOT}/alice/Maildir", tok["junk"], timeout=180)
    assert "/.Junk/" in where, where  # filed by the Sieve rule
    _wait_in_node(f, f"{ROOT}/bob/Maildir/new", tok["bob"])
    imap = _imap(f)
    try:
        assert imap.create("INBOX.Trash")[0] == "OK"
        assert imap.append("INBOX.Trash", None, None, _message(tok["trash"]))[0] == "OK"
        u0 = _usage(imap)
        assert imap.append("INBOX.Junk", None, None, _message("probe0", 20_000))[0] == "OK"
        before = _usage(imap)
        assert before > u0 + 18, (u0, before)
    finally:
        imap.logout()

    for path, change in (
        (f"domains/{domain_id}", {"folders": ["Trash", "Junk"]}),
        (f"mailboxes/{ids['bob']}", {"excluded": True}),
    ):
        response = client.patch(f"/api/v1/backup/exclusions/{path}/", change, format="json")
        assert response.status_code == 200, response.content
    job = _snap_now(client, domain_id)
    assert "moved alice/Maildir/.Trash out of snapshots" in job.log, job.log
    for link, target in (
        ("alice/Maildir/.Trash", "../../.ums-excluded/alice/.Trash"),
        ("alice/Maildir/.Junk", "../../.ums-excluded/alice/.Junk"),
        ("bob/Maildir", "../.ums-excluded/bob/Maildir"),
    ):
        got = f.in_node(IMAP, ["readlink", f"{ROOT}/{link}"]).stdout.strip()
        assert got == target, (link, got)
    assert f.in_node(IMAP, ["ls", "-A", f"{ROOT}/alice/.ums-exclude"], check=False).returncode
    first = _newest(f, dataset)
    every = list(tok.values())
    assert _stream_has(f, offnode_zfs.send_argv(dataset, first, None), every) == {tok["inbox"]}

    # Courier across the links, over IMAPS.
    imap = _imap(f)
    try:
        typ, listed = imap.list()
        assert (
            typ == "OK"
            and b"INBOX.Trash" in b" ".join(listed)
            and b"INBOX.Junk" in b" ".join(listed)
        ), listed
        assert tok["trash"].encode() in _bodies(imap, "INBOX.Trash")
        assert tok["junk"].encode() in _bodies(imap, "INBOX.Junk")
        assert _usage(imap) == before  # the quota counts what it counted before the move
        extra = f"append-{secrets.token_hex(8)}"
        # Courier counts every folder but Trash. An APPEND into a linked folder is not
        # added to maildirsize at once (Courier opens "<folder>/../maildirsize" refusing
        # links, README); its recount (what the policy job's "quota ... force" starts)
        # walks through the links and counts it.
        assert imap.append("INBOX", None, None, _message("probe", 20_000))[0] == "OK"
        counted = _usage(imap)
        assert counted >= before + 19
        assert imap.append("INBOX.Junk", None, None, _message(extra, 20_000))[0] == "OK"
        imap.logout()
        md = f"{ROOT}/alice/Maildir"
        recount = f"rm {md}/maildirsize && maildirmake -q 41943040S {md}"
        f.in_node(IMAP, ["sh", "-c", f"{recount} && chown -h 5000:5000 {md}/maildirsize"])
        imap = _imap(f)
        assert _usage(imap) >= counted + 19
        assert extra.encode() in _bodies(imap, "INBOX.Junk")
        # COPY, and a move to Trash as clients do it here (COPY, \Deleted, EXPUNGE: this
        # Courier does not offer the MOVE extension, links or not).
        assert "MOVE" not in imap.capabilities
        for token in ("copy", "deleted"):
            tok[token] = f"{token}-{secrets.token_hex(8)}"
            assert imap.append("INBOX", None, None, _message(tok[token]))[0] == "OK"
        imap.select("INBOX")
        typ, data = imap.search(None, "SUBJECT", tok["copy"])
        assert imap.copy(data[0].decode(), "INBOX.Trash")[0] == "OK"
        typ, data = imap.search(None, "SUBJECT", tok["deleted"])
        number = data[0].decode()
        assert imap.copy(number, "INBOX.Trash")[0] == "OK"
        assert imap.store(number, "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert imap.expunge()[0] == "OK"
        inbox = _bodies(imap, "INBOX")
        assert tok["inbox"].encode() in inbox and tok["copy"].encode() in inbox
        assert tok["deleted"].encode() not in inbox
        trash = _bodies(imap, "INBOX.Trash")
        for token in ("trash", "copy", "deleted"):
            assert tok[token].encode() in trash, token
        # Expunge in the excluded folder itself.
        typ, data = imap.search(None, "SUBJECT", tok["copy"])
        assert imap.store(data[0].decode(), "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert imap.expunge()[0] == "OK"
        assert tok["copy"].encode() not in _bodies(imap, "INBOX.Trash")
    finally:
        imap.logout()
    # Sieve files into the linked Junk.
    tok["junk2"] = f"junk-{secrets.token_hex(8)}"
    _send(f, f"alice@{DOMAIN}", tok["junk2"])
    _wait_in_node(f, f"{ROOT}/.ums-excluded/alice/.Junk", tok["junk2"])
    assert f.in_node(IMAP, ["grep", "-rl", tok["junk2"], f"{ROOT}/alice/Maildir/.Junk/"]).stdout

    # The next snapshot and the incremental stream: still no excluded token, INBOX's there.
    time.sleep(1.1)
    _snap_now(client, domain_id)
    second = _newest(f, dataset)
    assert second != first
    every = list(tok.values())
    wanted = {tok["inbox"], tok["copy"]}
    assert _stream_has(f, offnode_zfs.send_argv(dataset, second, first), every) <= wanted
    assert _stream_has(f, offnode_zfs.send_argv(dataset, second, None), every) == wanted

    # The off-node copy to a target (a real S3 server), through the product's copy job:
    # the encrypted stream objects hold the INBOX token and no excluded one.
    response = client.post(
        "/api/v1/backup/targets/", s3_server.target_body(cast.ministry.pk), format="json"
    )
    assert response.status_code == 201, response.content
    response = client.post(
        "/api/v1/backup/offnode-settings/",
        {"node": f.nodes[IMAP].pk, "target": response.json()["id"], "intervalMinutes": 60},
        format="json",
    )
    assert response.status_code == 201, response.content
    _ok(client.post(f"/api/v1/backup/offnode-settings/{response.json()['id']}/copy-now/"))
    stored = sorted((s3_server.root / "backups" / "ums-offnode" / DOMAIN).rglob("*"))
    streams = [p for p in stored if p.is_file() and p.name != "manifest.json"]
    assert streams, stored
    plain = b"".join(crypto.decrypt_bytes(p.read_bytes()) for p in streams)
    assert {t for t in every if t.encode() in plain} == wanted

    # Lifted: the folders come back into the dataset, the next snapshot holds them.
    response = client.patch(
        f"/api/v1/backup/exclusions/domains/{domain_id}/", {"folders": ["Junk"]}, format="json"
    )
    assert response.status_code == 200, response.content
    time.sleep(1.1)
    job = _snap_now(client, domain_id)
    assert "moved alice/Maildir/.Trash back into snapshots" in job.log, job.log
    assert f.in_node(IMAP, ["test", "-d", f"{ROOT}/alice/Maildir/.Trash/cur"]).returncode == 0
    assert f.in_node(IMAP, ["test", "-L", f"{ROOT}/alice/Maildir/.Trash"], check=False).returncode
    third = _newest(f, dataset)
    got = _stream_has(f, offnode_zfs.send_argv(dataset, third, None), every)
    assert {tok["trash"], tok["deleted"]} <= got
    assert tok["junk"] not in got and tok["bob"] not in got
    imap = _imap(f)
    try:
        trash = _bodies(imap, "INBOX.Trash")
        assert all(tok[t].encode() in trash for t in ("trash", "deleted"))
    finally:
        imap.logout()

    # Fault: the mover killed (SIGKILL) in the middle of moving 3,000 messages of "Big".
    big = f"{ROOT}/alice/Maildir/.Big"
    marker = f"big-{secrets.token_hex(8)}"
    f.in_node(
        IMAP,
        [
            "python3",
            "-c",
            "import os,sys\n"
            "d=sys.argv[1]\n"
            "for s in ('cur','new','tmp'): os.makedirs(d+'/'+s, exist_ok=True)\n"
            "for i in range(3000):\n"
            "    n='%s/cur/%d.M1P1.node:2,S' % (d, 1700000000+i)\n"
            "    open(n, 'w').write(sys.argv[2]+'\\n')\n"
            "os.system('chown -R 5000:5000 '+d)\n",
            big,
            marker,
        ],
    )
    response = client.patch(
        f"/api/v1/backup/exclusions/domains/{domain_id}/",
        {"folders": ["Junk", "Big", "Trash"]},
        format="json",
    )
    assert response.status_code == 200, response.content
    params = json.dumps({"root": "/var/mail/vhosts", "domain": DOMAIN, "folders": ["Big", "Junk"]})
    mover = 'printf %s "$1" | timeout -s KILL 1.5 python3 -c "$2"'
    killed = f.in_node(IMAP, ["sh", "-c", mover, "sh", params, exclude_node.PROGRAM], check=False)
    assert killed.returncode == 137, killed  # killed, not finished
    # Half-way: part of the folder copied, the original still where Courier reads it.
    copied = f.in_node(IMAP, ["sh", "-c", f"ls {ROOT}/.ums-excluded/alice/.Big/cur | wc -l"])
    assert 0 < int(copied.stdout) < 3000, copied.stdout
    assert f.in_node(IMAP, ["test", "-L", big], check=False).returncode != 0
    time.sleep(1.1)
    job = _snap_now(client, domain_id)  # the next pass heals
    assert f.in_node(IMAP, ["readlink", big]).stdout.strip() == "../../.ums-excluded/alice/.Big"
    count = f.in_node(
        IMAP,
        ["sh", "-c", f"ls {big}/cur | wc -l; ls -A {ROOT}/alice | grep -c ums-exclude"],
        check=False,
    ).stdout.split()
    assert count == ["3000", "0"], count
    fourth = _newest(f, dataset)
    assert _stream_has(f, offnode_zfs.send_argv(dataset, fourth, None), [marker]) == set()
    imap = _imap(f)
    try:
        typ, data = imap.select("INBOX.Big")
        assert typ == "OK" and int(data[0]) == 3000, data
    finally:
        imap.logout()

    # Courier's Trash retention job empties the excluded Trash through its link, and
    # nothing else.
    assert f.in_node(IMAP, ["test", "-L", f"{ROOT}/alice/Maildir/.Trash"]).returncode == 0
    response = client.patch(
        f"/api/v1/mail/mailboxes/{ids['alice']}/", {"retentionDays": 10}, format="json"
    )
    assert response.status_code == 200, response.content
    assert not _failed_jobs(), _failed_jobs()
    purge = f.in_node(IMAP, ["sh", policy.POLICY_SCRIPT, "purge", "--now", str(2**33)], check=False)
    assert "purged from Trash" in purge.stdout, purge
    left = f.in_node(IMAP, ["sh", "-c", f"ls {ROOT}/.ums-excluded/alice/.Trash/cur | wc -l"])
    assert left.stdout.strip() == "0", left.stdout
    imap = _imap(f)
    try:
        assert tok["inbox"].encode() in _bodies(imap, "INBOX")
        assert _bodies(imap, "INBOX.Trash") == b""
    finally:
        imap.logout()
