"""The node program on real Maildirs (run here with the system Python, as on a node):
``maildirsize`` is trusted only when newer than every folder, else the folders are walked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from usage.node_program import PROGRAM


def _run(root: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        input=json.dumps({"root": str(root), "domains": None}).encode(),
        capture_output=True,
        check=True,
    )
    return json.loads(done.stdout)["boxes"]


def _maildir(root: Path, domain: str, local: str) -> Path:
    maildir = root / domain / local / "Maildir"
    for folder in (maildir, maildir / ".Sent"):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    return maildir


def test_walks_every_folder_and_reads_sizes_from_names(tmp_path: Path) -> None:
    maildir = _maildir(tmp_path, "a.example", "ann")
    (maildir / "new" / "1.M1.host").write_bytes(b"x" * 100)
    (maildir / "cur" / "2.M2.host,S=5000:2,S").write_bytes(b"y" * 10)  # the name's size wins
    (maildir / ".Sent" / "cur" / "3.M3.host:2,S").write_bytes(b"z" * 30)
    (maildir / "tmp" / "4.M4.host").write_bytes(b"t" * 999)  # not delivered yet
    assert _run(tmp_path) == {"a.example/ann": [5130, 3]}


def test_maildirsize_is_used_only_while_it_is_newer_than_the_folders(tmp_path: Path) -> None:
    maildir = _maildir(tmp_path, "a.example", "ann")
    (maildir / "new" / "1.M1.host").write_bytes(b"x" * 100)
    size_file = maildir / "maildirsize"
    size_file.write_text("1048576S\n4000 2\n1000 1\n")
    newer = max(p.stat().st_mtime for p in maildir.rglob("*") if p.is_dir()) + 10
    os.utime(size_file, (newer, newer))
    assert _run(tmp_path) == {"a.example/ann": [5000, 3]}
    # A delivery after it was written: the folder is newer, so the folders are walked.
    os.utime(maildir / "new", (newer + 5, newer + 5))
    assert _run(tmp_path) == {"a.example/ann": [100, 1]}
