"""bootstrapcore.sh, for real: served by the portal, run by ``sh`` as root on a real node.

The node is a real sshd test node (tests/harness) with its own /etc/ssh and /root. The
portal is pytest-django's live server behind a real nginx terminating TLS with a
certificate from a throwaway private CA, on the address the node reaches the host at. The
script downloads nothing but itself (wget), installs the controller's key, collects the
node's facts and registers over HTTPS; the test then logs in with the controller's key.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from django.utils import timezone

from deploy import controller_keys
from deploy.connector.base import AuthenticationFailed
from deploy.connector.ssh import SSHConnector
from servers import actions as server_actions
from servers import enrolment
from servers.choices import NodeStatus
from servers.install import operator_command, script_url
from servers.models import EnrolmentToken, Node, Zone
from tests.harness.sshnodes import NodeCluster, TestNode
from tests.servers.enrolment_helpers import new_host_key

SCRIPT_URL = "/install/bootstrapcore.sh"
NODE_SCRIPT = "/root/bootstrapcore.sh"
NODE_CA = "/root/ca.pem"
OTHER_KEY_LINE = new_host_key() + " operator@laptop"


# --------------------------------------------------------------------------- the served script


@pytest.mark.django_db
@override_settings(BASE_URL="https://portal.example.net:8443", ALLOWED_HOSTS=["*"])
def test_served_script_uses_base_url_from_settings_not_the_host_header(client: Client) -> None:
    response = client.get(SCRIPT_URL, HTTP_HOST="evil.example.com")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/x-shellscript")
    text = response.content.decode()
    assert text.startswith("#!/bin/sh\n")
    assert "UMS_BASE_URL=https://portal.example.net:8443\n" in text
    assert "evil.example.com" not in text
    key = controller_keys.current_public_key()
    assert f"UMS_CONTROLLER_KEY='{key}'\n" in text
    assert key.endswith("ums-controller-v1")


@pytest.mark.django_db
def test_served_script_is_valid_posix_sh(client: Client, tmp_path: Path) -> None:
    script = tmp_path / "bootstrapcore.sh"
    script.write_bytes(client.get(SCRIPT_URL).content)
    for shell in ("sh", "dash", "bash"):
        if shutil.which(shell):
            proc = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
            assert proc.returncode == 0, f"{shell}: {proc.stderr}"
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/install-test-packages.sh adds it)")
    proc = subprocess.run(["shellcheck", "--shell=sh", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.django_db
def test_script_never_disables_certificate_checks(client: Client) -> None:
    text = client.get(SCRIPT_URL).content.decode()
    for insecure in ("--insecure", "--no-check-certificate", "CURLOPT_SSL_VERIFY"):
        assert insecure not in text


@pytest.mark.django_db
def test_only_get_is_allowed_on_the_script(client: Client) -> None:
    assert client.post(SCRIPT_URL).status_code == 405


# --------------------------------------------------------------------------- real TLS portal


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca_and_server_cert(ip: str) -> tuple[bytes, bytes, bytes]:
    """(CA cert PEM, server cert PEM, server key PEM) of a throwaway private CA."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("UMS test CA"))
        .issuer_name(_name("UMS test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(ip))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return (
        ca_cert.public_bytes(pem),
        cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {address}:{port} ssl;
        ssl_certificate {dir}/server.pem;
        ssl_certificate_key {dir}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
}}
"""


@dataclass
class TlsPortal:
    base_url: str
    ca_pem: bytes
    process: subprocess.Popen[bytes]
    dir: Path


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def nginx_tls_proxy(address: str, upstream_port: int) -> Iterator[TlsPortal]:
    """A real nginx on ``address`` terminating TLS and proxying to the live server."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is not installed (scripts/install-test-packages.sh installs it)")
    workdir = Path(tempfile.mkdtemp(prefix="ums-nginx-"))
    # nginx workers run as nobody and must reach their temp folders.
    workdir.chmod(0o755)
    ca_pem, cert_pem, key_pem = make_ca_and_server_cert(address)
    (workdir / "server.pem").write_bytes(cert_pem)
    key_file = workdir / "server.key"
    key_file.write_bytes(key_pem)
    key_file.chmod(0o600)
    port = _free_port(address)
    conf = workdir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(dir=workdir, address=address, port=port, upstream=upstream_port)
    )
    check = subprocess.run(
        [nginx, "-t", "-c", str(conf), "-p", f"{workdir}/"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", f"{workdir}/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                log = (workdir / "error.log").read_text(errors="replace")
                pytest.fail(f"nginx exited with {process.returncode}: {log}")
            with contextlib.suppress(OSError), socket.create_connection((address, port), 0.5):
                break
            if time.monotonic() > deadline:
                pytest.fail("nginx did not start listening within 20 s")
            time.sleep(0.05)
        yield TlsPortal(f"https://{address}:{port}", ca_pem, process, workdir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- the node


@dataclass
class BootstrapSetup:
    cluster: NodeCluster
    node: TestNode
    portal: TlsPortal
    zone: Zone

    def extra_args(self) -> list[str]:
        # Loopback nodes listen on a random port; in netns mode the script reads port 22
        # from the node's own sshd configuration (sshd -T).
        return [] if self.cluster.mode == "netns" else ["--ssh-port", str(self.node.port)]

    def run(
        self, token: str, *, interpreter: str = "sh", ca: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [interpreter, NODE_SCRIPT, token, *self.extra_args()]
        if ca:
            argv += ["--ca-file", NODE_CA]
        return self.node.exec_in_node(argv, check=False, timeout=180)

    def authorized_keys(self) -> str:
        path = self.node.path("/root/.ssh/authorized_keys")
        return path.read_text() if path.exists() else ""


def _give_node_its_own_host_key(node: TestNode) -> None:
    """The node's /etc/ssh is a private copy of the host's: replace the host's keys in it."""
    etc_ssh = node.path("/etc/ssh")
    for old in etc_ssh.glob("ssh_host_*"):
        old.unlink()
    private = etc_ssh / "ssh_host_ed25519_key"
    shutil.copyfile(node.host_key_path, private)
    private.chmod(0o600)
    (etc_ssh / "ssh_host_ed25519_key.pub").write_text(node.host_key + "\n")


@pytest.fixture
def bootstrap(
    ssh_nodes: Any, live_server: Any, settings: Any, cast: Any, zone: Zone
) -> Iterator[BootstrapSetup]:
    # The harness authorises its own session key, not the controller's: the controller
    # is let in only by what the script writes into root's authorized_keys.
    cluster: NodeCluster = ssh_nodes(1, private_paths=("/etc/ssh",))
    node = cluster.nodes[0]
    _give_node_its_own_host_key(node)
    address = cluster.bridge_address if cluster.mode == "netns" else "127.0.0.1"
    upstream = urlsplit(live_server.url).port
    settings.NODE_REGISTER_THROTTLE_RATE = "100000/minute"
    with nginx_tls_proxy(address, upstream) as portal:
        settings.BASE_URL = portal.base_url
        settings.ALLOWED_HOSTS = [address, "127.0.0.1", "localhost"]
        node.path(NODE_CA).write_bytes(portal.ca_pem)
        controller_keys.current()  # the key the served script carries
        # Download the script on the node as an operator would (wget, certificate checked).
        node.exec_in_node(
            [
                "wget",
                "-q",
                f"--ca-certificate={NODE_CA}",
                "-O",
                NODE_SCRIPT,
                portal.base_url + SCRIPT_URL,
            ]
        )
        yield BootstrapSetup(cluster=cluster, node=node, portal=portal, zone=zone)


def controller_connector(node: TestNode) -> SSHConnector:
    key = controller_keys.current()
    return SSHConnector(
        node.address,
        node.port,
        pkey=controller_keys.private_key(key),
        known_host_keys=[node.host_key],
        connect_timeout=5.0,
        command_timeout=30.0,
        retries=0,
    )


def new_token(zone: Zone, **kwargs: Any) -> tuple[EnrolmentToken, str]:
    return enrolment.create_enrolment_token(actor=None, zone=zone, name="rack", **kwargs)


# --------------------------------------------------------------------------- tests


@pytest.mark.nodes
def test_script_enrols_a_real_node_over_https(bootstrap: BootstrapSetup) -> None:
    node = bootstrap.node
    keys_file = node.path("/root/.ssh/authorized_keys")
    keys_file.parent.mkdir(mode=0o700, exist_ok=True)
    # An operator's own key, without a final newline: it must survive and stay intact.
    keys_file.write_text(OTHER_KEY_LINE)
    with controller_connector(node) as ssh, pytest.raises(AuthenticationFailed):
        ssh.connect()

    token, full = new_token(bootstrap.zone, max_uses=1)
    first = bootstrap.run(full)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "registered as pending" in first.stdout

    registered = Node.objects.get()
    assert registered.status == NodeStatus.PENDING
    assert registered.zone == bootstrap.zone
    if bootstrap.cluster.isolated:
        assert registered.hostname == node.hostname
    assert (registered.os_id, registered.os_version) == ("debian", "12")
    assert "Debian" in registered.os_pretty_name
    assert registered.reported_host_keys == [node.host_key]
    assert registered.ssh_address == node.address
    assert registered.ssh_port == node.port
    assert registered.cpus >= 1 and registered.memory_mb > 0
    assert any(d["mount"] == "/" for d in registered.disks)
    assert node.address in registered.addresses

    controller_key = controller_keys.current().public_key
    blob = controller_key.split()[1]
    lines = bootstrap.authorized_keys().splitlines()
    assert lines == [OTHER_KEY_LINE, controller_key]
    with controller_connector(node) as ssh:
        result = ssh.run(["id", "-u"]).check()
    assert result.stdout.strip() == "0"

    # Running it again (here with bash) changes nothing: one node, one key line, same use.
    second = bootstrap.run(full, interpreter="bash")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already registered" in second.stdout
    assert Node.objects.count() == 1
    assert bootstrap.authorized_keys().count(blob) == 1
    token.refresh_from_db()
    assert token.uses == 1


@pytest.mark.nodes
def test_without_the_private_ca_the_certificate_check_fails(bootstrap: BootstrapSetup) -> None:
    _token, full = new_token(bootstrap.zone)
    result = bootstrap.run(full, ca=False)
    assert result.returncode != 0
    assert "cannot verify the portal's TLS certificate" in result.stderr
    assert "--ca-file" in result.stderr
    assert not Node.objects.exists()


@pytest.mark.nodes
def test_bad_tokens_are_refused_clearly_and_register_nothing(bootstrap: BootstrapSetup) -> None:
    zone = bootstrap.zone
    spent, spent_full = new_token(zone, max_uses=1)
    enrolment.register_node(
        token_string=spent_full,
        facts={
            "hostname": "other.example.org",
            "ssh_address": "192.0.2.50",
            "host_keys": [new_host_key()],
        },
    )
    expired, expired_full = new_token(zone)
    EnrolmentToken.objects.filter(pk=expired.pk).update(
        expires_at=timezone.now() - datetime.timedelta(minutes=1)
    )
    revoked, revoked_full = new_token(zone)
    enrolment.revoke_enrolment_token(actor=None, token=revoked)
    cases = {
        "spent": (spent_full, "used up"),
        "expired": (expired_full, "expired"),
        "revoked": (revoked_full, "revoked"),
        "forged": (f"umsnode_{revoked.prefix}_{'Z' * 43}", "not valid"),
        "unknown": (f"umsnode_{'0' * 12}_{'Z' * 43}", "not valid"),
        "malformed": ("umsnode_nonsense", "not an enrolment token"),
    }
    for case, (token, expected) in cases.items():
        result = bootstrap.run(token)
        assert result.returncode != 0, case
        if case != "malformed":
            assert "registration refused (HTTP 403)" in result.stderr, case
        assert expected in result.stderr, (case, result.stderr)
    assert list(Node.objects.values_list("hostname", flat=True)) == ["other.example.org"]
    spent.refresh_from_db()
    assert spent.uses == 1


@pytest.mark.nodes
def test_script_refuses_to_run_as_non_root(bootstrap: BootstrapSetup) -> None:
    _token, full = new_token(bootstrap.zone)
    script = bootstrap.node.path(NODE_SCRIPT).read_text()
    # nobody cannot read root's home, so the script arrives on stdin (sh -s).
    result = bootstrap.node.exec_in_node(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-s",
            "--",
            full,
            "--ca-file",
            NODE_CA,
        ],
        input=script,
        check=False,
    )
    assert result.returncode != 0
    assert "run this script as root" in result.stderr
    assert not Node.objects.exists()
    assert bootstrap.authorized_keys() == ""


@pytest.mark.django_db
def test_operator_command_is_what_the_portal_shows(settings: Any, cast: Any) -> None:
    settings.BASE_URL = "https://portal.example.net"
    zone = server_actions.create_zone(actor=None, customer=cast.government, name="DC9")
    _token, full = new_token(zone)
    assert operator_command(full) == (
        "cd /tmp && wget https://portal.example.net/install/bootstrapcore.sh && "
        f"sh bootstrapcore.sh {full}"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://portal.example.net/a'b",
        "https://portal.example.net/$(reboot)",
        "https://x.example\n",
    ],
)
def test_a_base_url_unsafe_for_the_shell_is_refused(settings: Any, url: str) -> None:
    settings.BASE_URL = url
    with pytest.raises(ImproperlyConfigured):
        script_url()
