"""The exclusion layout's node program on a real zfs-fuse pool of its own (no sshd node):
every state a killed move can leave behind heals on the next pass, nothing is lost or
doubled, and what is excluded is absent from a snapshot's ``zfs send`` stream.

The intermediate states are made by hand here exactly as the program leaves them between
its steps (the node test kills the program itself, SIGKILL, in the middle of a copy).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup import exclude_layout
from backup.exclusions import Exclusions

from .privzfs import NsConnector, PrivateZfs, private_zfs

DOMAIN = "states.example"
ROOT = "/var/lib/ums-exclude-test"


@pytest.fixture(scope="module")
def zfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateZfs]:
    with private_zfs(tmp_path_factory.mktemp("exclzfs")) as z:
        z.run("zfs", "create", "-p", "-o", f"mountpoint={ROOT}/{DOMAIN}", f"{z.pool}/mail/{DOMAIN}")
        yield z


def _dataset(z: PrivateZfs) -> str:
    return f"{z.pool}/mail/{DOMAIN}"


def _p(z: PrivateZfs, rel: str) -> Path:
    return z.path(f"{ROOT}/{DOMAIN}/{rel}")


def _folder(z: PrivateZfs, rel: str, names: list[str]) -> None:
    base = _p(z, rel)
    for sub in ("cur", "new", "tmp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "maildirfolder").touch()
    for name in names:
        (base / "cur" / name).write_text(f"message {name}\n")


def _converge(z: PrivateZfs, excl: Exclusions) -> dict:
    conn = NsConnector(z)
    stores = exclude_layout.store_datasets(conn, f"{z.pool}/mail")
    report = exclude_layout.converge_domain(
        conn,
        dataset=_dataset(z),
        domain=DOMAIN,
        excl=excl,
        has_store=f"{_dataset(z)}/{exclude_layout.STORE}" in stores,
        conf={"mail_root": ROOT},
    )
    assert report is not None
    return report


def _names(path: Path) -> list[str]:
    return sorted(os.listdir(path / "cur")) + sorted(os.listdir(path / "new"))


TRASH = Exclusions(folders=frozenset({"Trash"}))


def test_heals_every_state_of_a_killed_move_and_leaves_the_folder_out(zfs: PrivateZfs) -> None:
    z = zfs
    _folder(z, "alice/Maildir", ["1.A.n:2,S"])
    _folder(z, "alice/Maildir/.Trash", ["2.B.n:2,S", "3.C.n:2,"])
    (_p(z, "alice/Maildir/.Trash/cur/2.B.n:2,S")).write_text("trash-token-one\n")

    # Killed after a partial copy (one message copied): the next pass copies the rest.
    z.run("zfs", "create", f"{_dataset(z)}/.ums-excluded")
    _folder(z, ".ums-excluded/alice/.Trash", ["3.C.n:2,"])
    report = _converge(z, TRASH)
    link = _p(z, "alice/Maildir/.Trash")
    assert link.is_symlink() and os.readlink(link) == "../../.ums-excluded/alice/.Trash"
    assert _names(link) == ["2.B.n:2,S", "3.C.n:2,"]
    assert report["excluded"] == ["alice/Maildir/.Trash"]
    assert not _p(z, "alice/.ums-exclude").exists()

    # Killed between "rename aside" and "link": no folder, the aside folder holds the mail
    # plus one message delivered meanwhile; the next pass links and merges.
    os.unlink(link)
    aside = _p(z, "alice/.ums-exclude/out/.Trash")
    _folder(z, "alice/.ums-exclude/out/.Trash", ["2.B.n:2,S", "4.D.n:2,"])
    _converge(z, TRASH)
    assert link.is_symlink() and _names(link) == ["2.B.n:2,S", "3.C.n:2,", "4.D.n:2,"]
    assert not aside.exists()

    # A real folder again next to the excluded copy (made by a delivery in that window):
    # merged in, nothing doubled.
    os.unlink(link)
    _folder(z, "alice/Maildir/.Trash", ["5.E.n:2,", "4.D.n:2,S"])
    _converge(z, TRASH)
    assert _names(link) == ["2.B.n:2,S", "3.C.n:2,", "4.D.n:2,", "5.E.n:2,"]

    # The snapshot and its stream leave the excluded folder out, keep the inbox.
    z.run("zfs", "snapshot", f"{_dataset(z)}@ums-manual-20261207T000000Z")
    sent = z.run(
        "sh",
        "-c",
        'zfs send "$1" | grep -a -c -e trash-token-one -e "message 1.A" ; exit 0',
        "sh",
        f"{_dataset(z)}@ums-manual-20261207T000000Z",
    )
    assert sent.stdout.strip() == "1", sent  # only the inbox message's line

    # Lifted, killed after the staging copy and the unlink: the next pass renames it in
    # and merges what was left in the excluded copy.
    staging = _p(z, "alice/.ums-exclude/in/.Trash")
    _folder(z, "alice/.ums-exclude/in/.Trash", ["2.B.n:2,S", "3.C.n:2,"])
    os.unlink(link)
    report = _converge(z, Exclusions())
    trash = _p(z, "alice/Maildir/.Trash")
    assert trash.is_dir() and not trash.is_symlink()
    assert _names(trash) == ["2.B.n:2,S", "3.C.n:2,", "4.D.n:2,", "5.E.n:2,"]
    assert not staging.exists() and not _p(z, ".ums-excluded/alice/.Trash").exists()
    assert report["included"] == ["alice/Maildir/.Trash"]
    # In step: a second pass changes nothing.
    assert _converge(z, Exclusions()) == {
        "excluded": [],
        "included": [],
        "merged": 0,
        "problems": [],
    }


def test_an_excluded_mailbox_moves_whole_and_back(zfs: PrivateZfs) -> None:
    z = zfs
    _folder(z, "bob/Maildir", ["10.A.n:2,"])
    _folder(z, "bob/Maildir/.Junk", ["11.B.n:2,"])
    both = Exclusions(mailboxes=frozenset({"bob"}), folders=frozenset({"Junk"}))
    _converge(z, Exclusions(folders=frozenset({"Junk"})))
    assert _p(z, "bob/Maildir/.Junk").is_symlink()
    # Now the whole mailbox: its folder comes back into the Maildir first, then the
    # Maildir moves (a folder link inside a moved Maildir would point nowhere).
    _converge(z, both)
    maildir = _p(z, "bob/Maildir")
    assert os.readlink(maildir) == "../.ums-excluded/bob/Maildir"
    assert not (maildir / ".Junk").is_symlink() and _names(maildir / ".Junk") == ["11.B.n:2,"]
    assert _names(maildir) == ["10.A.n:2,"]
    # An IMAP RENAME of a linked folder renames the link: the excluded copy follows the
    # name, and the folder (no longer an excluded name) comes back into the Maildir.
    _converge(z, Exclusions(folders=frozenset({"Junk"})))
    os.rename(_p(z, "bob/Maildir/.Junk"), _p(z, "bob/Maildir/.Kept"))
    _converge(z, Exclusions(folders=frozenset({"Junk"})))
    kept = _p(z, "bob/Maildir/.Kept")
    assert kept.is_dir() and not kept.is_symlink() and _names(kept) == ["11.B.n:2,"]
    assert not _p(z, "bob/Maildir/.Junk").exists()
    assert not _p(z, ".ums-excluded/bob/.Junk").exists()
    # A link whose folder is missing (a promoted replica has the links, not the excluded
    # data): an empty folder is made, so Courier and the LDA keep working.
    _converge(z, Exclusions(folders=frozenset({"Spam"})))
    _folder(z, "bob/Maildir/.Spam", ["12.C.n:2,"])
    _converge(z, Exclusions(folders=frozenset({"Spam"})))
    shutil.rmtree(_p(z, ".ums-excluded/bob/.Spam"))
    report = _converge(z, Exclusions(folders=frozenset({"Spam"})))
    assert any("pointed at nothing" in p for p in report["problems"]), report
    spam = _p(z, "bob/Maildir/.Spam")
    assert spam.is_symlink() and _names(spam) == [] and (spam / "maildirfolder").exists()
    _converge(z, Exclusions())
    # A link someone else made is left alone and reported.
    _converge(z, Exclusions())
    assert maildir.is_dir() and not maildir.is_symlink()
    os.symlink("/etc", _p(z, "bob/Maildir/.Odd"))
    report = _converge(z, Exclusions(folders=frozenset({"Odd"})))
    assert any("did not make" in p for p in report["problems"]), report
    os.unlink(_p(z, "bob/Maildir/.Odd"))


def test_a_move_that_would_leave_no_room_for_mail_is_not_started_and_says_why(
    zfs: PrivateZfs,
) -> None:
    # A move copies the folder before the original goes: with a 160 MB quota, an 80 MB
    # Trash would leave less than the 16 MB kept free for arriving mail, so nothing is
    # copied (no half copy eating the space), the folder stays where it is and the pass
    # fails with the figures. With the big message gone, the next pass moves the folder.
    z = zfs
    dataset = _dataset(z)
    _folder(z, "carol/Maildir", ["1.C.n:2,S"])
    _folder(z, "carol/Maildir/.Trash", ["2.C.n:2,S"])
    big = _p(z, "carol/Maildir/.Trash/cur/3.BIG.n:2,S")
    with open(big, "wb") as out:
        for _ in range(80):
            out.write(os.urandom(1 << 20))
    z.run("zfs", "set", "quota=160M", dataset)
    try:
        with pytest.raises(exclude_layout.ExcludeError, match="not enough free space"):
            _converge(z, TRASH)
        trash = _p(z, "carol/Maildir/.Trash")
        assert trash.is_dir() and not trash.is_symlink()
        assert big.exists()
        assert not _p(z, ".ums-excluded/carol/.Trash").exists()
        big.unlink()
        deadline = time.monotonic() + 60  # ZFS frees the blocks at its next transaction
        while os.statvfs(trash).f_bavail * os.statvfs(trash).f_frsize < 120 << 20:
            assert time.monotonic() < deadline, "the freed message never showed as free"
            time.sleep(0.5)
        _converge(z, TRASH)
        assert trash.is_symlink()
        assert _names(_p(z, ".ums-excluded/carol/.Trash")) == ["2.C.n:2,S"]
    finally:
        z.run("zfs", "set", "quota=none", dataset)


def test_archive_members_skip_links_of_excluded_folders_and_mailboxes() -> None:
    from backup.offnode_archive import members

    listing = "\0".join(
        [
            "d alice",
            "d alice/Maildir",
            "d alice/Maildir/cur",
            "l alice/Maildir/.Trash",
            "d alice/.ums-exclude",
            "d bob",
            "l bob/Maildir",
            "d .ums-excluded",
            "d .ums-excluded/alice",
        ]
    )
    assert members(listing, Exclusions()) == (["alice/Maildir/cur"], ["alice"])
