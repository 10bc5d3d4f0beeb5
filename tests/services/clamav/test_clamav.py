"""ClamAV: rendering, clamconf validation, and a real clamd detecting EICAR.

There is no signature download here, so the tests build a local database the way the
notes say (``sigtool --md5 eicar > local.hdb``); clamd refuses to start without one.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from deploy.services.base import CheckFailed, DesiredState, DomainData, NodeView
from deploy.services.clamav import ClamAVService, antivirus_domains, antivirus_enabled
from tests.services.localconn import LocalConnector, install

# Built from two halves so no file in the repository is itself flagged by scanners.
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$" + r"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def _state(*policies: dict, os_family: str = "debian") -> DesiredState:
    node = NodeView(3, "smtp1.ums.test", "127.0.0.1", ("smtp",), os_family, 1)
    domains = [DomainData(f"d{i}.example", True, "", (), None, p) for i, p in enumerate(policies)]
    return DesiredState(node=node, domains=domains)


def test_render_only_when_some_domain_wants_antivirus() -> None:
    assert ClamAVService().render(_state({"antivirus": False})) == []
    state = _state({"antivirus": False}, {"antivirus": {"value": True, "source": {}}}, {})
    assert antivirus_domains(state) == ["d1.example", "d2.example"]  # default is on
    [conf] = ClamAVService().render(state)
    assert conf.path == "/etc/clamav/clamd.conf"
    text = conf.content.decode()
    assert "LocalSocket /run/clamav/clamd.ctl\n" in text and "TCPAddr 127.0.0.1\n" in text
    assert "User clamav\n" in text
    forced = _state({"antivirus": False})
    forced.settings["antivirus"] = True
    assert antivirus_enabled(forced)


def test_render_rhel_paths_and_refuses_injection() -> None:
    [conf] = ClamAVService().render(_state({}, os_family="rhel"))
    assert conf.path == "/etc/clamd.d/scan.conf" and b"User clamscan\n" in conf.content
    with pytest.raises(ValueError):
        ClamAVService(overrides={"LogFile": "/x\nUser root"}).render(_state({}))


def test_the_engine_stages_and_records_clamd_in_the_rocky_directory() -> None:
    """The converge engine binds the service to the node: on Rocky its stage, state and
    fence files and the inside-the-root check all use /etc/clamd.d (before, the render
    check refused the file as outside /etc/clamav and clamd never converged on Rocky)."""
    from deploy import converge

    service = ClamAVService()
    state = _state({}, os_family="rhel")
    [bound] = converge.applicable_services(state, [service])
    assert bound.config_root == "/etc/clamd.d" and service.config_root == "/etc/clamav"
    [conf] = converge.render(bound, state)
    assert conf.path == "/etc/clamd.d/scan.conf"
    assert converge.state_file(bound).startswith("/etc/clamd.d/")
    assert converge.fence_file(bound).startswith("/etc/clamd.d/")
    [debian] = converge.applicable_services(_state({}), [service])
    assert debian is service


needs_clamav = pytest.mark.skipif(
    shutil.which("clamd") is None or shutil.which("clamconf") is None, reason="clamav not installed"
)


def _render_private(tmp_path: Path, **extra: str | None) -> tuple[ClamAVService, Path]:
    etc, db, run = tmp_path / "etc", tmp_path / "db", tmp_path / "run"
    for path in (etc, db, run):
        path.mkdir()
    service = ClamAVService(
        config_root=str(etc),
        overrides={
            "LocalSocket": str(run / "clamd.sock"),
            "LocalSocketGroup": None,
            "TCPSocket": None,  # no TCP listener in tests: the unix socket is enough
            "TCPAddr": None,
            "User": None,
            "DatabaseDirectory": str(db),
            "PidFile": str(run / "clamd.pid"),
            "LogFile": str(run / "clamd.log"),
            "Foreground": "true",
            "SelfCheck": None,
            **extra,
        },
    )
    install(service.render(_state({})))
    return service, etc


@needs_clamav
def test_clamconf_accepts_rendering_and_refuses_bad_option(tmp_path: Path) -> None:
    service, etc = _render_private(tmp_path)
    service.validate(LocalConnector(), str(etc))
    bad_root = tmp_path / "bad"
    bad = ClamAVService(config_root=str(bad_root), overrides={"FoobarOption": "yes"})
    install(bad.render(_state({})))
    with pytest.raises(CheckFailed) as failed:
        bad.validate(LocalConnector(), str(bad_root))
    assert "FoobarOption" in failed.value.output


@pytest.fixture
def eicar_file(tmp_path: Path) -> Path:
    path = tmp_path / "eicar.com"
    path.write_text(EICAR)
    return path


def _build_db(db: Path, eicar: Path) -> None:
    hdb = subprocess.run(
        ["sigtool", "--md5", str(eicar)], capture_output=True, text=True, check=True
    )
    (db / "local.hdb").write_text(hdb.stdout)


@needs_clamav
def test_real_clamd_detects_eicar(tmp_path: Path, eicar_file: Path) -> None:
    service, etc = _render_private(tmp_path)
    service.validate(LocalConnector(), str(etc))
    _build_db(tmp_path / "db", eicar_file)
    sock = tmp_path / "run" / "clamd.sock"
    process = subprocess.Popen(
        ["clamd", "--config-file", str(etc / "clamd.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(600):  # loading even a one-line database takes a few seconds
            if sock.exists() or process.poll() is not None:
                break
            time.sleep(0.1)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""

        def scan(data: bytes) -> str:
            # INSTREAM: the same stream scan a mail filter does (no file access needed).
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(60)
                client.connect(str(sock))
                client.sendall(b"zINSTREAM\0" + len(data).to_bytes(4, "big") + data + b"\0\0\0\0")
                reply = b""
                while not reply.endswith(b"\0"):
                    chunk = client.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
            return reply.rstrip(b"\0").decode()

        assert scan(EICAR.encode()).endswith("FOUND")
        assert scan(b"Subject: hello\n\nNothing to see.\n") == "stream: OK"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode is not None


@needs_clamav
def test_clamscan_with_same_database(tmp_path: Path, eicar_file: Path) -> None:
    db = tmp_path / "db"
    db.mkdir()
    _build_db(db, eicar_file)
    result = subprocess.run(
        ["clamscan", "--no-summary", "-d", str(db), str(eicar_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "FOUND" in result.stdout
