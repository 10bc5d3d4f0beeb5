"""Target drivers against real servers: rclone's S3 server, Samba's smbd, and a plain
directory standing in for an NFS mount (no NFS server or client can run on this machine;
the NFS driver only ever sees a mounted directory, so a local one exercises all of it)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from backup import crypto
from backup.drivers import TargetError, get_decrypted, probe, put_encrypted
from backup.drivers.cifs import CifsTarget
from backup.drivers.nfs import NfsTarget
from backup.drivers.s3 import S3Target

from .servers import S3Server, SmbServer


def s3(server: S3Server, **overrides: object) -> S3Target:
    values: dict = {
        "endpoint_url": server.url,
        "region": "",
        "bucket": "backups",
        "prefix": "ums/test",
        "access_key": server.access_key,
        "secret_key": server.secret_key,
    }
    values.update(overrides)
    return S3Target(**values)


def smb(server: SmbServer, **overrides: object) -> CifsTarget:
    values: dict = {
        "server": "127.0.0.1",
        "port": server.port,
        "share": server.share,
        "path": "ums/test",
        "username": server.username,
        "password": server.password,
        "timeout": 5,
    }
    values.update(overrides)
    return CifsTarget(**values)


@pytest.fixture(params=["s3", "cifs", "nfs"])
def driver_and_files(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        yield s3(server), server.root / "backups"
    elif request.param == "cifs":
        server = request.getfixturevalue("smb_server")
        driver = smb(server)
        yield driver, server.root
        driver.close()
    else:
        yield NfsTarget(str(tmp_path)), tmp_path


def _stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_encrypted_round_trip_stores_only_ciphertext(driver_and_files) -> None:
    driver, files = driver_and_files
    token = secrets.token_hex(12).encode()
    # Three chunks and a bit: the stream format's chunking is exercised end to end.
    payload = token + b"x" * (3 * crypto.CHUNK_SIZE + 17) + token
    name = f"dumps/{secrets.token_hex(4)}.bin"
    written = put_encrypted(driver, name, [payload[:1000], payload[1000:]])
    assert written > len(payload)
    assert name in driver.list("dumps")
    assert b"".join(get_decrypted(driver, name)) == payload
    on_disk = [p.read_bytes() for p in _stored_files(files) if p.name == name.split("/")[1]]
    assert len(on_disk) == 1 and on_disk[0].startswith(crypto.MAGIC)
    assert token not in on_disk[0]
    driver.delete(name)
    assert name not in driver.list("dumps")
    driver.delete(name)  # deleting what is gone is not an error
    with pytest.raises(TargetError, match="does not exist"):
        b"".join(driver.get(name))


def test_probe_leaves_nothing_behind(driver_and_files) -> None:
    driver, _files = driver_and_files
    probe(driver)
    assert driver.list("ums-probe") == []


def test_object_names_are_checked(tmp_path: Path) -> None:
    driver = NfsTarget(str(tmp_path / "mnt"))
    (tmp_path / "mnt").mkdir()
    for bad in ("../escape", "/abs", "a//b", "a/./b", ".hidden", "a\\b", ""):
        with pytest.raises(TargetError):
            driver.put(bad, [b"x"])
    assert not (tmp_path / "escape").exists()


def test_nfs_path_not_mounted_is_clear(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="not a directory"):
        probe(NfsTarget(str(tmp_path / "not-mounted")))


def test_s3_wrong_secret_and_missing_bucket(s3_server: S3Server) -> None:
    with pytest.raises(TargetError, match="refused the secret key"):
        probe(s3(s3_server, secret_key="wrong-secret-key-0000"))
    with pytest.raises(TargetError, match=r"does not know this access key|denied access"):
        probe(s3(s3_server, access_key="nobody"))
    with pytest.raises(TargetError, match="bucket 'nobucket' does not exist"):
        probe(s3(s3_server, bucket="nobucket"))


def test_cifs_wrong_password_and_missing_share(smb_server: SmbServer) -> None:
    for overrides, message in (
        ({"password": "wrong-password"}, "refused the user name or password"),
        ({"share": "noshare"}, "no share called 'noshare'"),
    ):
        driver = smb(smb_server, **overrides)
        try:
            with pytest.raises(TargetError, match=message):
                probe(driver)
        finally:
            driver.close()


def test_decryption_refuses_wrong_key_damage_and_truncation() -> None:
    data = crypto.encrypt_bytes(b"secret mail" * 1000)
    assert crypto.decrypt_bytes(data) == b"secret mail" * 1000
    other = Fernet.generate_key().decode()
    with pytest.raises(crypto.DecryptionError, match="another backup key"):
        crypto.decrypt_bytes(data, key=other)
    damaged = bytearray(data)
    damaged[-5] ^= 1
    with pytest.raises(crypto.DecryptionError, match="damaged"):
        crypto.decrypt_bytes(bytes(damaged))
    big = crypto.encrypt_bytes(b"y" * (2 * crypto.CHUNK_SIZE + 1))
    first_chunk_end = crypto.HEADER_SIZE + 4 + crypto.CHUNK_SIZE + 16
    with pytest.raises(crypto.DecryptionError, match="truncated"):
        crypto.decrypt_bytes(big[:first_chunk_end])
    with pytest.raises(crypto.DecryptionError, match="not a UMS backup"):
        crypto.decrypt_bytes(b"plain text")
