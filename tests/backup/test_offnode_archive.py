"""What a Maildir archive holds: the members chosen from the node's listing by the
exclusion policies (``Exclusions.excludes_path``), without a node."""

from __future__ import annotations

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
