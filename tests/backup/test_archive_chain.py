"""Incremental Maildir archives without a node: a real Maildir on local disk listed by
the same ``find`` and archived by the same GNU ``tar`` argv a pass runs over SSH, stored
encrypted on a real target (a folder standing in for an NFS mount); the point of the
middle archive is assembled exactly (deleted messages absent, flags as they were) and
an increment holds only the new mail."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from backup import archive_chain as chain
from backup import drivers
from backup import offnode_archive as oa
from backup.drivers.nfs import NfsTarget
from backup.exclusions import Exclusions

DOMAIN = "chain.example"


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _archive(root: Path, driver: NfsTarget, archives: list[dict], n: int, excl: Exclusions):
    """One pass over ``root`` as :func:`oa.archive_to_target` makes it (minus ZFS)."""
    listing = subprocess.run(oa.find_argv(str(root)), capture_output=True, check=True).stdout
    kept, boxes = oa.members(listing.decode(), excl)
    full = subprocess.run(chain.tree_argv(str(root)), capture_output=True, check=True).stdout
    dirs, files = chain.tree(full.decode(), kept)
    previous = chain.read_index(driver, archives[-1]) if archives else None
    name = f"{oa.PREFIX}/{DOMAIN}/2026120{n}T000000Z-ums-manual-{n}.tar"
    copy, index = chain.plan(dirs, files, name, previous)
    plain = subprocess.run(
        oa.tar_argv(str(root)),
        input=b"".join(p.encode() + b"\0" for p in copy),
        capture_output=True,
        check=True,
    ).stdout
    drivers.put_encrypted(driver, name, [plain])
    chain.write_index(driver, chain.index_name(name), index)
    digest = oa._Digest()
    list(digest.wrap([plain]))
    archives.append(
        {
            "name": name,
            "id": name,
            "kind": chain.INCREMENTAL if previous else chain.FULL,
            "chain": archives[0]["name"] if archives else name,
            "index": chain.index_name(name),
            "snapshot": f"ums-manual-{n}",
            "bytes": digest.size,
            "sha256": digest.sha.hexdigest(),
            "mailboxes": boxes,
        }
    )
    return plain


def _tree(root: Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for folder, subdirs, names in os.walk(root):
        for d in subdirs:
            found[os.path.relpath(os.path.join(folder, d), root)] = None
        for n in names:
            path = os.path.join(folder, n)
            found[os.path.relpath(path, root)] = Path(path).read_bytes()
    return found


def _extract(data: bytes) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            found[member.name] = tar.extractfile(member).read() if member.isreg() else None
    return found


def test_base_and_two_increments_restore_the_middle_point_exactly(tmp_path: Path) -> None:
    root, driver = tmp_path / "domain", NfsTarget(str(tmp_path / "target"))
    (tmp_path / "target").mkdir()
    box = "alice/Maildir"
    for sub in ("cur", "new", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp"):
        (root / box / sub).mkdir(parents=True)
    big = os.urandom(2 * 1024 * 1024)
    _write(root, f"{box}/cur/100.M1.node:2,S", big)
    _write(root, f"{box}/new/101.M1.node", b"unread")
    _write(root, f"{box}/.Sent/cur/102.M1.node:2,S", b"sent")
    _write(root, f"{box}/maildirsize", b"100 1\n")
    archives: list[dict] = []
    base = _archive(root, driver, archives, 1, Exclusions())

    # Point 2: new mail, the unread one read (new -> cur), the sent one re-flagged, the
    # big one still there; "middle" is what a restore of point 2 must give back.
    new = b"new mail " * 100
    _write(root, f"{box}/new/103.M1.node", new)
    os.rename(root / box / "new/101.M1.node", root / box / "cur/101.M1.node:2,S")
    os.rename(root / box / ".Sent/cur/102.M1.node:2,S", root / box / ".Sent/cur/102.M1.node:2,RS")
    _write(root, f"{box}/maildirsize", b"100 2\n")
    inc1 = _archive(root, driver, archives, 2, Exclusions())
    middle = _tree(root)

    # Point 3: the big message deleted, the sent one flagged again, more new mail.
    os.unlink(root / box / "cur/100.M1.node:2,S")
    os.rename(root / box / ".Sent/cur/102.M1.node:2,RS", root / box / ".Sent/cur/102.M1.node:2,FRS")
    _write(root, f"{box}/new/104.M1.node", b"later")
    inc2 = _archive(root, driver, archives, 3, Exclusions())

    # Each increment holds the new mail and the small mutable files, not the domain.
    assert len(base) > len(big) and len(inc1) < 20 * 1024 and len(inc2) < 20 * 1024
    assert sorted(n for n, d in _extract(inc1).items() if d is not None) == [
        f"{box}/maildirsize",
        f"{box}/new/103.M1.node",
    ]
    assert [e["kind"] for e in archives] == ["full", "incremental", "incremental"]

    point = b"".join(chain.plain_chunks(driver, archives, archives[1]))
    assert _extract(point) == middle
    last = _extract(b"".join(chain.plain_chunks(driver, archives, archives[2])))
    assert last == _tree(root) and f"{box}/cur/100.M1.node:2,S" not in last
    # One mailbox's Maildir only (a mailbox restore), with the folder leading to it.
    only = _extract(b"".join(chain.point_chunks(driver, archives, archives[1], box)))
    assert only == {k: v for k, v in middle.items() if k.startswith(box) or k == "alice"}

    # A tar changed on the target is refused, not restored.
    drivers.put_encrypted(
        driver, archives[0]["name"], [base[:9000] + bytes([base[9000] ^ 1]) + base[9001:]]
    )
    with pytest.raises(drivers.TargetError, match="does not match its manifest"):
        b"".join(chain.plain_chunks(driver, archives, archives[1]))


def test_chains_group_archives_and_keep_old_full_archives_apart() -> None:
    archives = [
        {"name": "a"},  # written before increments: a chain of its own
        {"name": "b", "id": "b", "chain": "b", "kind": "full"},
        {"name": "c2", "id": "c", "chain": "b", "kind": "incremental"},
        {"name": "d", "id": "d", "chain": "d", "kind": "full"},
    ]
    assert [[e["name"] for e in c] for c in chain.chains(archives)] == [["a"], ["b", "c2"], ["d"]]
    assert chain.message_key("x/Maildir/cur/1.M2.n:2,RS", 5) == chain.message_key(
        "x/Maildir/new/1.M2.n", 5
    )
    assert chain.message_key("x/Maildir/maildirsize", 5) is None
    assert chain.message_key("y/Maildir/cur/1.M2.n:2,RS", 5) != chain.message_key(
        "x/Maildir/cur/1.M2.n:2,RS", 5
    )


def test_purge_rewrites_every_point_of_the_chain_without_the_mailbox(tmp_path: Path) -> None:
    """Permanent deletion of alice: each tar and index of the chain whose point holds her
    is rewritten, so no point brings her back; bob's mail stays in every point, and
    nothing the manifest names is missing."""
    root, driver = tmp_path / "domain", NfsTarget(str(tmp_path / "target"))
    (tmp_path / "target").mkdir()
    for box in ("alice", "bob"):
        for sub in ("cur", "new", "tmp"):
            (root / box / "Maildir" / sub).mkdir(parents=True)
    _write(root, "alice/Maildir/cur/1.M1.n:2,S", b"alice-one")
    _write(root, "bob/Maildir/cur/2.M1.n:2,S", b"bob-two")
    archives: list[dict] = []
    _archive(root, driver, archives, 1, Exclusions())
    _write(root, "alice/Maildir/new/3.M1.n", b"alice-three")
    _write(root, "bob/Maildir/new/4.M1.n", b"bob-four")
    _archive(root, driver, archives, 2, Exclusions())
    oa._write_manifest(driver, {"version": 1, "domain": DOMAIN, "archives": archives})

    assert len(oa.rewrite_without(driver, DOMAIN, "Alice")) == 2
    after = oa.read_manifest(driver, DOMAIN)["archives"]
    assert [e["id"] for e in after] == [e["id"] for e in archives]
    manifest = {"domain": DOMAIN, "archives": after}
    assert sorted(driver.list(f"{oa.PREFIX}/{DOMAIN}")) == sorted(oa.referenced(manifest))
    for entry in after:
        point = _extract(b"".join(chain.plain_chunks(driver, after, entry)))
        assert not [n for n in point if n.startswith("alice")]
        assert point["bob/Maildir/cur/2.M1.n:2,S"] == b"bob-two"
    assert b"bob-four" in _extract(b"".join(chain.plain_chunks(driver, after, after[1]))).values()
    assert oa.rewrite_without(driver, DOMAIN, "alice") == []
