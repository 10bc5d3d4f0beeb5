"""What a Maildir archive holds: the members chosen from the node's listing by the
exclusion policies (``Exclusions.excludes_path``), without a node; and the rewrite of
the archives without a purged mailbox."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from backup import drivers
from backup import offnode_archive as oa
from backup.drivers.nfs import NfsTarget
from backup.exclusions import Exclusions
from backup.offnode_archive import find_argv, members, tar_argv

LISTING = "\0".join(
    [
        "d alice",
        "d alice/Maildir",
        "d alice/Maildir/cur",
        "d alice/Maildir/new",
        "d alice/Maildir/tmp",
        "f alice/Maildir/maildirsize",
        "d alice/Maildir/.Sent",
        "d alice/Maildir/.Trash",
        "d alice/Maildir/.Trash.Old",
        "d alice/Maildir/.Trashcan",
        "f alice/.mailfilter",
        "d Bob",
        "d Bob/Maildir",
        "d Bob/Maildir/cur",
        "f stray",
        "d ../escape",
        "",
    ]
)


def test_members_leave_out_excluded_mailboxes_and_folders() -> None:
    excl = Exclusions(mailboxes=frozenset({"bob"}), folders=frozenset({"Trash"}))
    kept, boxes = members(LISTING, excl)
    assert kept == [
        "alice/.mailfilter",
        "alice/Maildir/.Sent",
        "alice/Maildir/.Trashcan",  # not a subfolder of Trash
        "alice/Maildir/cur",
        "alice/Maildir/maildirsize",
        "alice/Maildir/new",
        "alice/Maildir/tmp",
        "stray",
    ]
    assert boxes == ["alice"]


def test_no_exclusions_keep_everything_and_names_stay_data() -> None:
    kept, boxes = members(LISTING, Exclusions())
    assert "alice/Maildir/.Trash" in kept and "Bob/Maildir/cur" in kept
    assert boxes == ["Bob", "alice"]
    assert not [k for k in kept if ".." in k]
    # The list reaches tar as NUL-separated data on stdin, never as options or a shell.
    assert "--verbatim-files-from" in tar_argv("/x") and "--files-from=-" in tar_argv("/x")
    assert find_argv("/x")[-1] == "%y %P\\0"


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_purge_rewrites_the_archives_without_the_mailbox(tmp_path: Path) -> None:
    """On a real target (a folder standing in for an NFS mount): the archive holding
    alice is rewritten without her, bob's mail stays, and running it again is a no-op."""
    driver = NfsTarget(str(tmp_path))
    plain = _tar(
        {
            "alice/Maildir/cur/1:2,S": b"alice-token",
            "./alice/Maildir/.Sent/cur/2:2,S": b"alice-sent",
            "bob/Maildir/cur/3:2,S": b"bob-token",
            "alicia/Maildir/cur/4:2,S": b"alicia-token",
        }
    )
    name = f"{oa.PREFIX}/ex.example/20261207T000000Z-ums-manual-x.tar"
    drivers.put_encrypted(driver, name, [plain])
    other = f"{oa.PREFIX}/ex.example/20261206T000000Z-ums-manual-y.tar"
    drivers.put_encrypted(driver, other, [_tar({"bob/Maildir/cur/5:2,S": b"old-bob"})])
    leftover = f"{oa.PREFIX}/ex.example/junk.tar"
    drivers.put_encrypted(driver, leftover, [b"cut"])
    manifest = {
        "version": 1,
        "domain": "ex.example",
        "archives": [
            {"name": other, "snapshot": "y", "mailboxes": ["bob"], "sha256": "s"},
            {"name": name, "snapshot": "x", "mailboxes": ["alice", "alicia", "bob"]},
        ],
    }
    oa._write_manifest(driver, manifest)

    rewritten = oa.rewrite_without(driver, "ex.example", "Alice")
    assert len(rewritten) == 1 and rewritten[0] != name
    after = oa.read_manifest(driver, "ex.example")
    assert after["archives"][0] == manifest["archives"][0]  # bob's old archive untouched
    entry = after["archives"][1]
    assert entry["mailboxes"] == ["alicia", "bob"]
    data = b"".join(drivers.get_decrypted(driver, entry["name"]))
    assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert tar.extractfile("bob/Maildir/cur/3:2,S").read() == b"bob-token"
    assert names == ["bob/Maildir/cur/3:2,S", "alicia/Maildir/cur/4:2,S"]
    assert sorted(driver.list(f"{oa.PREFIX}/ex.example")) == sorted(
        [other, entry["name"], oa.manifest_name("ex.example")]
    )
    assert oa.rewrite_without(driver, "ex.example", "alice") == []


def test_the_manifest_records_each_mailboxs_folders() -> None:
    kept, _boxes = members(LISTING, Exclusions(folders=frozenset({"Trash"})))
    assert oa.folders_of(kept) == {"Bob": [], "alice": ["Sent", "Trashcan"]}
    archives = [
        {"snapshot": "old", "mailboxes": ["alice"]},  # written before folders were kept
        {"snapshot": "new", "mailboxes": ["alice", "Bob"], "folders": oa.folders_of(kept)},
    ]
    assert oa.members_by_snapshot(archives) == {"new": {"alice": ["Sent", "Trashcan"], "Bob": []}}
