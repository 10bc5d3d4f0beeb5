"""Restore on a real zfs-fuse pool on this machine (a private daemon: privzfs.py), driven
through the same code the job runs over SSH, with a local connector: a Maildir++ mailbox
in a domain dataset, a snapshot, mail deleted and received since, then restores into a
new folder and in place; a re-run after an interrupted one leaves every message once."""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

import pytest

from backup import restore, restore_run
from backup.models import Snapshot
from tests.fixtures import Cast
from tests.mail.helpers import make_domain, make_mailbox

from .privzfs import NsConnector, PrivateZfs, private_zfs
from .test_snapshots import _imap_node

DOMAIN = "restore.example"
PYTHON = "/usr/bin/python3"
MAIL_UID = 5000


def _message(folder: Path, sub: str, name: str, body: str) -> Path:
    for part in ("cur", "new", "tmp"):
        (folder / part).mkdir(parents=True, exist_ok=True)
        os.chown(folder / part, MAIL_UID, MAIL_UID)
    path = folder / sub / name
    path.write_text(f"Subject: {body}\n\n{body}\n")
    os.chown(path, MAIL_UID, MAIL_UID)
    return path


def _tokens(folder: Path) -> list[str]:
    found = []
    for sub in ("cur", "new"):
        if (folder / sub).is_dir():
            found += [p.read_text().split("\n")[0][9:] for p in (folder / sub).iterdir()]
    return sorted(found)


@pytest.fixture
def zfs(tmp_path: Path):
    with private_zfs(tmp_path) as daemon:
        yield daemon


CONN: list[NsConnector] = []


@pytest.fixture
def store(zfs: PrivateZfs, tmp_path: Path, cast: Cast, settings):
    root = tmp_path / "vhosts"
    dataset = f"{zfs.pool}/mail/{DOMAIN}"
    zfs.run("zfs", "create", f"{zfs.pool}/mail")
    zfs.run("zfs", "create", "-o", f"mountpoint={root}/{DOMAIN}", dataset)
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "mail_root": str(root)}
    CONN[:] = [NsConnector(zfs)]
    domain = make_domain(cast.ministry, DOMAIN)
    alice = make_mailbox(domain, "alice", quota_mb=10)
    maildir = zfs.path(root / DOMAIN / "alice" / "Maildir")
    _message(maildir, "cur", "100.M1.host:2,S", "inbox-old")
    _message(maildir / ".Sent", "cur", "101.M1.host:2,S", "sent-old")
    (maildir / ".Sent" / "maildirfolder").touch()
    _message(maildir / ".Work", "cur", "102.M1.host:2,", "work-old")
    _message(maildir / ".Work.Deep", "new", "103.M1.host", "deep-old")
    for d in (maildir, maildir.parent):
        os.chown(d, MAIL_UID, MAIL_UID)
    # A link in the snapshot must never pull another file into the mailbox.
    (maildir / "cur" / "999.M1.evil:2,S").symlink_to("/etc/hostname")
    name = "ums-manual-20261201T101010Z"
    zfs.run("zfs", "snapshot", f"{dataset}@{name}")
    snap = Snapshot.objects.create(
        node=_imap_node(cast),
        domain=domain,
        customer_path=domain.customer_path,
        dataset=dataset,
        name=name,
        tier="manual",
        taken_at=datetime.datetime(2026, 12, 1, 10, 10, 10, tzinfo=datetime.UTC),
        observed_at=datetime.datetime(2026, 12, 1, 10, 10, 10, tzinfo=datetime.UTC),
    )
    # Since the snapshot: the Work folder deleted, a message deleted from the inbox, the
    # Sent message's flags changed, new mail received.
    shutil.rmtree(maildir / ".Work")
    shutil.rmtree(maildir / ".Work.Deep")
    (maildir / "cur" / "100.M1.host:2,S").unlink()
    (maildir / "cur" / "999.M1.evil:2,S").unlink()
    (maildir / ".Sent" / "cur" / "101.M1.host:2,S").rename(
        maildir / ".Sent" / "cur" / "101.M1.host:2,FS"
    )
    _message(maildir, "new", "200.M2.host", "inbox-new")
    yield snap, alice, maildir


def _run(snap: Snapshot, job_id: int, **params) -> dict:
    base = {"snapshot_id": snap.pk, "mailbox_id": None, "folder": None, "mode": "new_folder"}
    base.update(params)
    saved: list[dict] = []
    result = restore_run.run(CONN[0], job_id, base, python=PYTHON, save_params=saved.append)
    result["saved"] = saved
    return result


def test_new_folder_restore_keeps_everything_and_subscribes(store) -> None:
    snap, alice, maildir = store
    result = _run(snap, 7001, mailbox_id=alice.pk)
    target = maildir / ".Restored 2026-12-01"
    assert _tokens(target) == ["inbox-old"]
    assert _tokens(maildir / ".Restored 2026-12-01.Sent") == ["sent-old"]
    assert _tokens(maildir / ".Restored 2026-12-01.Work") == ["work-old"]
    assert _tokens(maildir / ".Restored 2026-12-01.Work.Deep") == ["deep-old"]
    assert (maildir / ".Restored 2026-12-01.Sent" / "maildirfolder").exists()
    # Nothing existing touched: the new message, the changed flags.
    assert _tokens(maildir) == ["inbox-new"]
    assert (maildir / ".Sent" / "cur" / "101.M1.host:2,FS").exists()
    subscribed = (maildir / "courierimapsubscribed").read_text().splitlines()
    assert "INBOX.Restored 2026-12-01" in subscribed
    assert "INBOX.Restored 2026-12-01.Work.Deep" in subscribed
    # Owned by the mail user, quota recounted at once.
    assert (target / "cur").stat().st_uid == MAIL_UID
    sizefile = (maildir / "maildirsize").read_text().splitlines()
    assert sizefile[0] == f"{10 * 1024 * 1024}S"
    assert result["saved"][0]["targets"] == {"alice": ".Restored 2026-12-01"}
    assert not (maildir.parent / ".ums-restore-7001").exists()
    assert "ums-restore-7001" not in CONN[0].zfs.run("zfs", "list", "-H", "-o", "name").stdout
    # Nor its mountpoint folder (one per restore piled up under the clone root).
    from backup.restore_run import CLONE_ROOT

    assert not (Path(CLONE_ROOT) / f"{CONN[0].zfs.pool}-ums-restore-7001").exists()
    # Again: the name is taken, so "(2)"; one folder only.
    _run(snap, 7002, mailbox_id=alice.pk, folder="Work")
    assert _tokens(maildir / ".Restored 2026-12-01 (2).Work") == ["work-old"]
    assert _tokens(maildir / ".Restored 2026-12-01 (2).Work.Deep") == ["deep-old"]
    assert _tokens(maildir / ".Restored 2026-12-01 (2)") == []
    assert not (maildir / ".Restored 2026-12-01 (2).Sent").exists()


def test_in_place_brings_back_deleted_and_flags_keeps_new_mail(store) -> None:
    snap, alice, maildir = store
    _run(snap, 7003, mailbox_id=alice.pk, mode="in_place")
    assert _tokens(maildir) == ["inbox-new", "inbox-old"]
    assert (maildir / "cur" / "100.M1.host:2,S").exists()
    assert _tokens(maildir / ".Work") == ["work-old"]
    assert _tokens(maildir / ".Work.Deep") == ["deep-old"]
    assert sorted(os.listdir(maildir / ".Sent" / "cur")) == ["101.M1.host:2,S"]
    assert "INBOX.Work" in (maildir / "courierimapsubscribed").read_text().splitlines()
    # A second run changes nothing: no duplicates.
    _run(snap, 7004, mailbox_id=alice.pk, mode="in_place")
    assert _tokens(maildir) == ["inbox-new", "inbox-old"]
    assert _tokens(maildir / ".Work") == ["work-old"]


def test_interrupted_restore_resumes_without_duplicates(store, monkeypatch) -> None:
    snap, alice, maildir = store
    for n in range(300):
        _message(maildir / ".Bulk", "cur", f"{1000 + n}.M9.host:2,S", f"bulk-{n}")
    CONN[0].zfs.run("zfs", "snapshot", f"{snap.dataset}@ums-manual-20261202T000000Z")
    snap2 = Snapshot.objects.create(
        node=snap.node,
        domain=snap.domain,
        customer_path=snap.customer_path,
        dataset=snap.dataset,
        name="ums-manual-20261202T000000Z",
        tier="manual",
        taken_at=datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC),
        observed_at=datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC),
    )
    # A zero time budget: every call copies one message, then reports (the job loops).
    monkeypatch.setattr(restore_run, "SLICE_SECONDS", 0.0)
    calls: list[tuple[int, int]] = []
    original = restore_run.node_program

    def dying(conn, python, args):  # the worker "dies" after a few slices
        if args["op"] == "restore" and len(calls) >= 5:
            raise RuntimeError("worker killed")
        answer = original(conn, python, args)
        if args["op"] == "restore":
            calls.append((answer["done"], answer["total"]))
        return answer

    monkeypatch.setattr(restore_run, "node_program", dying)
    params = {"snapshot_id": snap2.pk, "mailbox_id": alice.pk, "folder": "Bulk"}
    saved: list[dict] = []
    with pytest.raises(RuntimeError):
        restore_run.run(
            CONN[0],
            7005,
            {**params, "mode": "new_folder"},
            python=PYTHON,
            save_params=saved.append,
        )
    assert calls[-1][0] < 300 and calls[-1][1] == 300
    assert not (maildir / ".Restored 2026-12-02.Bulk").exists()  # nothing half visible
    monkeypatch.setattr(restore_run, "node_program", original)
    monkeypatch.setattr(restore_run, "SLICE_SECONDS", 30.0)
    restore_run.run(CONN[0], 7005, saved[-1], python=PYTHON)
    restored = _tokens(maildir / ".Restored 2026-12-02.Bulk")
    assert len(restored) == 300 and len(set(restored)) == 300
    assert not (maildir / ".Restored 2026-12-02 (2)").exists()


def test_folder_names_are_validated() -> None:
    for bad in ("../x", "a/b", "Sent..x", ".Sent", "x\ny", "a\\b", "Sent. x"):
        with pytest.raises(Exception):  # noqa: B017
            restore.clean_folder(bad)
    assert restore.clean_folder("INBOX") == ""
    assert restore.clean_folder("INBOX.Sent") == "Sent"
    assert restore.clean_folder("Archive.2025") == "Archive.2025"
    assert restore.clean_folder("Отправленные") == "Отправленные"
    assert restore.clean_folder(None) is None
    assert (
        restore.target_folder(datetime.date(2026, 12, 1), ["", ".Restored 2026-12-01.Sent"])
        == ".Restored 2026-12-01 (2)"
    )


def test_a_snapshot_being_restored_is_pruned_later_not_failed(store) -> None:
    from backup import snapshots

    snap, _alice, _maildir = store
    conn = CONN[0]
    name = "ums-hourly-20261201T1000Z"
    conn.zfs.run("zfs", "snapshot", f"{snap.dataset}@{name}")
    snap.name = name
    restore_run.ensure_clone(conn, snap, 7010)
    snapshots.destroy(conn, snap.dataset, name)  # has a dependent clone: kept, no error
    assert f"@{name}" in conn.zfs.run("zfs", "list", "-H", "-t", "snapshot", "-o", "name").stdout
    assert restore_run.ensure_clone(conn, snap, 7010)  # a resumed job finds its clone
    restore_run.destroy_clone(conn, snap, 7010)
    snapshots.destroy(conn, snap.dataset, name)
    assert (
        f"@{name}" not in conn.zfs.run("zfs", "list", "-H", "-t", "snapshot", "-o", "name").stdout
    )


def test_a_restore_that_does_not_fit_fails_and_leaves_nothing(store) -> None:
    snap, alice, maildir = store
    conn = CONN[0]
    for n in range(40):
        _message(maildir / ".Big", "cur", f"{3000 + n}.M3.host:2,S", "x" * 200_000)
    name = "ums-manual-20261203T000000Z"
    conn.zfs.run("zfs", "snapshot", f"{snap.dataset}@{name}")
    big = Snapshot.objects.create(
        node=snap.node,
        domain=snap.domain,
        customer_path=snap.customer_path,
        dataset=snap.dataset,
        name=name,
        tier="manual",
        taken_at=datetime.datetime(2026, 12, 3, tzinfo=datetime.UTC),
        observed_at=datetime.datetime(2026, 12, 3, tzinfo=datetime.UTC),
    )
    used = int(conn.zfs.run("zfs", "get", "-Hp", "-o", "value", "used", snap.dataset).stdout)
    conn.zfs.run("zfs", "set", f"quota={used + 1024 * 1024}", snap.dataset)
    with pytest.raises(restore_run.RestoreError) as failure:
        _run(big, 7020, mailbox_id=alice.pk, folder="Big")
    assert "Disk quota exceeded" in str(failure.value)
    assert sorted(os.listdir(maildir.parent)) == ["Maildir"]  # no staging, no lock
    assert not (maildir / ".Restored 2026-12-03").exists()
    assert "ums-restore-" not in conn.zfs.run("zfs", "list", "-H", "-o", "name").stdout


def test_purge_finds_and_destroys_a_left_over_restore_clone(store) -> None:
    from contextlib import nullcontext

    from backup import holders
    from backup.restore_holder import RestoreCloneHolder

    snap, _alice, _maildir = store
    conn = CONN[0]
    assert any(h.name == "restore_clones" for h in holders.holders())  # registered
    holder = RestoreCloneHolder(connect=lambda node: nullcontext(conn))
    assert holder.find(snap.domain, "alice") == []
    restore_run.ensure_clone(conn, snap, 7030)  # a given-up job's clone
    [copy] = holder.find(snap.domain, "alice")
    assert copy.ref["clone"] == f"{conn.zfs.pool}/ums-restore-7030"
    assert copy.also_removes  # the whole domain's mail is in it
    holder.destroy(copy, snap.domain, "alice", log=lambda line: None)
    holder.destroy(copy, snap.domain, "alice", log=lambda line: None)  # idempotent
    assert holder.find(snap.domain, None) == []
