"""nginx load balancer: rendering, a real private nginx on loopback, certificate renewal.

The real-daemon tests start Debian's nginx on 127.0.0.1 with the rendered files (private
pid, logs and temp paths under tmp_path) and a Python HTTP backend as the web node.
"""

from __future__ import annotations

import datetime as dt
import http.client
import http.server
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.services.base import CheckFailed, DesiredState, NodeView
from deploy.services.nginx import (
    FileCertificateStore,
    LocalCAIssuer,
    MissingCertificate,
    NginxService,
    certificates_setting,
    renew_certificates,
    tls_protocols,
)
from tests.services.localconn import LocalConnector, install

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")

HOST = "webmail.ums.test"


def _node() -> NodeView:
    return NodeView(1, "lb1.ums.test", "127.0.0.1", ("loadbalancer",), "debian", 1)


def _state(issuer: LocalCAIssuer, backend_port: int = 8080, **settings: object) -> DesiredState:
    bundle = issuer.issue([HOST])
    base: dict[str, object] = {
        "web_hostnames": {"webmail": HOST},
        "web_backend_ports": {"webmail": backend_port},
        "tls_certificates": {HOST: {"cert": bundle.cert_pem, "key": bundle.key_pem}},
    }
    base.update(settings)
    return DesiredState(
        node=_node(),
        nodes_by_role={"webmail": [("web1.ums.test", "127.0.0.1")]},
        settings=base,
    )


@pytest.fixture(scope="module")
def issuer() -> LocalCAIssuer:
    return LocalCAIssuer.create()


# --------------------------------------------------------------------------- pure


def test_render_defaults_to_tls12_with_relative_includes(issuer: LocalCAIssuer) -> None:
    files = {f.path: f for f in NginxService().render(_state(issuer))}
    main = files["/etc/nginx/nginx.conf"].content.decode()
    assert "ssl_protocols TLSv1.2;" in main
    assert "include ums/upstreams.conf;" in main and "include ums/sites.conf;" in main
    assert "@SECLEVEL=0" not in main
    key = files[f"/etc/nginx/ums/tls/{HOST}.key"]
    assert key.mode == 0o600 and b"PRIVATE KEY" in key.content
    assert files[f"/etc/nginx/ums/tls/{HOST}.crt"].mode == 0o644
    sites = files["/etc/nginx/ums/sites.conf"].content.decode()
    assert f"ssl_certificate ums/tls/{HOST}.crt;" in sites
    assert "return 301 https://$host$request_uri;" in sites


def test_render_legacy_tls_only_when_configured(issuer: LocalCAIssuer) -> None:
    state = _state(issuer, tls_versions=["1.0", "1.1", "1.2"])
    main = NginxService().render(state)[0].content.decode()
    assert "ssl_protocols TLSv1 TLSv1.1 TLSv1.2;" in main
    assert "@SECLEVEL=0" in main  # OpenSSL 3 refuses 1.0/1.1 handshakes otherwise
    assert tls_protocols({}) == ("TLSv1.2",)
    with pytest.raises(ValueError):
        tls_protocols({"tls_versions": ["SSLv3"]})


def test_render_upstreams_per_web_role(issuer: LocalCAIssuer) -> None:
    state = _state(issuer)
    default = issuer.issue(["lb.ums.test"])
    state.settings["tls_certificates"]["default"] = {  # type: ignore[index]
        "cert": default.cert_pem,
        "key": default.key_pem,
    }
    state.nodes_by_role = {
        "webmail": [("web2", "10.0.0.3"), ("web1", "10.0.0.2")],
        "chat": [("chat1", "fd00::5")],
        "office": [],
    }
    files = {f.path: f.content.decode() for f in NginxService().render(state)}
    upstreams = files["/etc/nginx/ums/upstreams.conf"]
    # Webmail sessions live on one Roundcube node: a client stays on its node.
    assert (
        "upstream ums_webmail {\n    ip_hash;\n    server 10.0.0.2:8080;\n    server 10.0.0.3:8080;"
        in upstreams
    )
    assert "upstream ums_chat {\n    server [fd00::5]:80;" in upstreams
    assert "ums_office" not in upstreams and "ums_cloudfiles" not in upstreams
    sites = files["/etc/nginx/ums/sites.conf"]
    assert "server_name chat.ums.test;" in sites  # role.<lb domain> without a hostname
    assert "proxy_pass http://ums_chat;" in sites
    assert "ssl_certificate ums/tls/default.crt;" in sites  # chat has no own certificate


def test_render_refuses_injection_and_missing_certificates(issuer: LocalCAIssuer) -> None:
    with pytest.raises(ValueError):
        NginxService().render(_state(issuer, web_hostnames={"webmail": "x; include /etc/shadow"}))
    state = _state(issuer)
    state.settings["tls_certificates"] = {}
    with pytest.raises(MissingCertificate):
        NginxService().render(state)


def test_render_is_deterministic(issuer: LocalCAIssuer) -> None:
    state = _state(issuer)
    assert NginxService().render(state) == NginxService().render(state)


# --------------------------------------------------------------------------- real nginx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Backend(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"backend saw {self.headers['Host']} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@dataclass
class RunningLB:
    http_port: int
    https_port: int
    ca_file: Path
    service: NginxService
    root: Path


@pytest.fixture
def backend() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _start_nginx(
    tmp_path: Path, issuer: LocalCAIssuer, backend: int, **settings: object
) -> tuple[RunningLB, Path]:
    root, run = tmp_path / "etc-nginx", tmp_path / "run"
    run.mkdir()
    service = NginxService(
        config_root=str(root),
        runtime_dir=str(run),
        listen_address="127.0.0.1",
        http_port=_free_port(),
        https_port=_free_port(),
    )
    install(service.render(_state(issuer, backend, **settings)))
    service.validate(LocalConnector(), str(root))
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(issuer.ca_cert_pem)
    subprocess.run(
        ["nginx", "-c", f"{root}/nginx.conf", "-p", f"{run}/"], check=True, capture_output=True
    )
    return RunningLB(
        service.http_port, service.https_port, ca_file, service, root
    ), run / "nginx.pid"


def _stop_nginx(pid_file: Path) -> None:
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)  # fast shutdown of master and workers
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"nginx {pid} did not stop")


@pytest.fixture
def lb(tmp_path: Path, issuer: LocalCAIssuer, backend: int) -> Iterator[RunningLB]:
    pid_file = tmp_path / "run" / "nginx.pid"
    try:
        running, pid_file = _start_nginx(tmp_path, issuer, backend)
        yield running
    finally:
        _stop_nginx(pid_file)


def _s_client(port: int, flag: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOST, flag],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _py_tls11(port: int) -> str:
    """Protocol a Python TLS 1.1-only client negotiates (raises ssl.SSLError if refused)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # Without SECLEVEL=0 OpenSSL 3 would not even offer TLS 1.1: the refusal must be
    # the server's, not our own client's.
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")
    with warnings.catch_warnings():  # TLSv1_1 is deprecated: that is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        return str(tls.version())


def test_real_nginx_refuses_tls11_accepts_tls12(lb: RunningLB) -> None:
    refused = _s_client(lb.https_port, "-tls1_1")
    assert refused.returncode != 0
    # s_client prints a session block even on failure; no cipher means no handshake.
    assert "Cipher is (NONE)" in refused.stdout
    accepted = _s_client(lb.https_port, "-tls1_2")
    assert accepted.returncode == 0, accepted.stderr
    assert "Protocol  : TLSv1.2" in accepted.stdout
    with pytest.raises(ssl.SSLError):
        _py_tls11(lb.https_port)


def test_real_nginx_accepts_tls11_when_configured(
    tmp_path: Path, issuer: LocalCAIssuer, backend: int
) -> None:
    pid_file = tmp_path / "run" / "nginx.pid"
    try:
        running, pid_file = _start_nginx(tmp_path, issuer, backend, tls_versions=["1.1", "1.2"])
        assert _py_tls11(running.https_port) == "TLSv1.1"
    finally:
        _stop_nginx(pid_file)


def test_real_nginx_redirects_http_to_https(lb: RunningLB) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", lb.http_port, timeout=10)
    conn.request("GET", "/mail/?x=1", headers={"Host": HOST})
    response = conn.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == f"https://{HOST}:{lb.https_port}/mail/?x=1"
    conn.close()


def test_real_nginx_proxies_to_upstream(lb: RunningLB) -> None:
    ctx = ssl.create_default_context(cafile=str(lb.ca_file))
    # Resolve HOST to loopback ourselves; SNI and certificate check still use HOST.
    with (
        socket.create_connection(("127.0.0.1", lb.https_port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        tls.sendall(f"GET /inbox HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert f"backend saw {HOST} /inbox".encode() in data
    assert b"Strict-Transport-Security" in data


def test_invalid_render_refused_on_staged_tree(tmp_path: Path, issuer: LocalCAIssuer) -> None:
    conn = LocalConnector()
    live = tmp_path / "live"
    good = NginxService(config_root=str(live), runtime_dir=str(tmp_path))
    install(good.render(_state(issuer)))
    good.validate(conn, str(live))

    # A staged copy whose *include* is broken: the relative include makes nginx -t read
    # the staged sites.conf, not the live one, so the failure is caught.
    staged = tmp_path / "staged"
    shutil.copytree(live, staged)
    (staged / "ums" / "sites.conf").write_text("server { bogus_directive on; }\n")
    with pytest.raises(CheckFailed) as failed:
        good.validate(conn, str(staged))
    assert "bogus_directive" in failed.value.output

    # A rendering with an injected bad directive (test-only override) is refused too.
    bad = NginxService(
        config_root=str(staged), runtime_dir=str(tmp_path), extra_http="frobnicate 1;"
    )
    shutil.rmtree(staged)
    install(bad.render(_state(issuer)))
    with pytest.raises(CheckFailed) as failed:
        bad.validate(conn, str(staged))
    assert "frobnicate" in failed.value.output
    good.validate(conn, str(live))  # live tree untouched and still valid


# --------------------------------------------------------------------------- renewal


def test_renewal_replaces_near_expiry_certificate(tmp_path: Path, issuer: LocalCAIssuer) -> None:
    store = FileCertificateStore(tmp_path / "tls")
    now = dt.datetime.now(dt.UTC)
    # Issued 80 days ago with a 90-day lifetime: 10 days left, inside the 30-day window.
    store.put(HOST, issuer.issue([HOST], now=now - dt.timedelta(days=80)))
    old = store.get(HOST)
    assert old is not None and old.not_after - now < dt.timedelta(days=11)
    assert ((tmp_path / "tls" / f"{HOST}.key").stat().st_mode & 0o777) == 0o600

    assert renew_certificates(store, issuer, {"lb.ums.test": ["lb.ums.test"]}, now=now) == [
        "lb.ums.test",
        HOST,
    ]
    new = store.get(HOST)
    assert new is not None and new.serial != old.serial and new.key_pem != old.key_pem
    assert new.not_after - now > dt.timedelta(days=89)
    assert new.names == (HOST,)
    assert renew_certificates(store, issuer, now=now) == []  # idempotent

    # The renewed certificate is what the load balancer renders next.
    state = _state(issuer)
    state.settings["tls_certificates"] = certificates_setting(store)
    files = {f.path: f.content for f in NginxService().render(state)}
    assert files[f"/etc/nginx/ums/tls/{HOST}.crt"].decode() == new.cert_pem


def test_renewal_task_uses_configured_store(
    tmp_path: Path, settings: object, transactional_db: None
) -> None:
    # The task queues the renewal job, which runs after commit (eager here); it looks up
    # the load balancers to mark dirty (none exist here).
    from deploy.services.nginx import tasks

    settings.UMS_TLS_CERT_DIR = str(tmp_path / "tls")  # type: ignore[attr-defined]
    settings.UMS_LB_HOSTNAMES = {HOST: [HOST]}  # type: ignore[attr-defined]
    assert tasks.renew_lb_certificates.apply().get() == [HOST]
    assert tasks.renew_lb_certificates.apply().get() == []
    assert (tmp_path / "tls" / "ca" / "ca.key").exists()


# --------------------------------------------------------------------------- over SSH


@pytest.mark.nodes
def test_validate_staged_tree_on_ssh_node(ssh_nodes, ssh_connect, issuer: LocalCAIssuer) -> None:  # type: ignore[no-untyped-def]
    """The checker runs on the node through the SSH connector, against a staged copy."""
    node = ssh_nodes(1).nodes[0]
    conn = ssh_connect(node)
    staged = "/etc/nginx/.ums-staged-test"
    service = NginxService(runtime_dir="/tmp")
    for managed in service.render(_state(issuer)):
        path = staged + managed.path[len("/etc/nginx") :]
        conn.run(["mkdir", "-p", path.rsplit("/", 1)[0]]).check()
        conn.put_file(path, managed.content, mode=managed.mode)
    service.validate(conn, staged)
    conn.put_file(f"{staged}/ums/sites.conf", b"server { bogus_directive on; }\n")
    with pytest.raises(CheckFailed) as failed:
        service.validate(conn, staged)
    assert "bogus_directive" in failed.value.output
    assert conn.get_file("/etc/nginx/nginx.conf") != service.render(_state(issuer))[0].content
