"""Fixtures of the backup tests: real S3 and SMB servers per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .servers import S3Server, SmbServer, rclone_s3, samba


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("s3")
    (root / "backups").mkdir()  # buckets are top-level folders
    with rclone_s3(root) as server:
        yield server


@pytest.fixture(scope="module")
def smb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmbServer]:
    with samba(Path(tmp_path_factory.mktemp("smb"))) as server:
        yield server
