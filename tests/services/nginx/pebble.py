"""A real Pebble (Let's Encrypt's test ACME server, Debian ``pebble``) for the tests.

Pebble listens on 127.0.0.1 with a certificate from a throwaway CA made here (the package
ships none); ``pebble-challtestsrv`` is its DNS server and answers every name with the
address of the load balancer under test, so Pebble's HTTP-01 validation really connects
to that load balancer's port ``http_port``. Every port is picked free at start, so two
runs on one machine do not collide. Stopped (by PID) at teardown.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listener_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, cert.pem, key.pem): a CA and a 127.0.0.1 certificate for Pebble's HTTPS."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble listener test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "listener-ca.pem", folder / "listener.pem", folder / "listener.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@dataclass
class Pebble:
    folder: Path
    lb_address: str
    http_port: int
    validity_seconds: int = 0
    acme_port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_port)
    dns_management_port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen] = field(default_factory=list)
    #: ``host:port`` of a real DNS server for Pebble's lookups (DNS-01 against BIND);
    #: empty: pebble-challtestsrv, which answers every name with ``lb_address``.
    dns_server: str = ""

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @property
    def listener_ca(self) -> Path:
        return self.folder / "listener-ca.pem"

    def start(self) -> Pebble:
        if not (shutil.which("pebble") and shutil.which("pebble-challtestsrv")):
            raise RuntimeError("Debian package pebble is not installed")
        self.folder.mkdir(parents=True, exist_ok=True)
        _ca, cert, key = _listener_certificate(self.folder)
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.acme_port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": self.http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        if self.validity_seconds:
            config["pebble"]["certificateValidityPeriod"] = self.validity_seconds
        (self.folder / "pebble.json").write_text(json.dumps(config))
        if not self.dns_server:
            self._start_challtestsrv()
        env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
        }
        log = open(self.folder / "pebble.log", "wb")  # noqa: SIM115 (kept open)
        self.processes.append(
            subprocess.Popen(
                [
                    "pebble",
                    "-config",
                    str(self.folder / "pebble.json"),
                    "-dnsserver",
                    self.dns_server or f"127.0.0.1:{self.dns_port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                self.roots()
                self._get(self.directory_url, self.acme_port)
                return self
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                    self.stop()
                    raise RuntimeError(
                        "pebble did not start: " + (self.folder / "pebble.log").read_text()[-2000:]
                    ) from None
                time.sleep(0.2)

    def _start_challtestsrv(self) -> None:
        dns_log = open(self.folder / "challtestsrv.log", "wb")  # noqa: SIM115 (kept open)
        self.processes.append(
            subprocess.Popen(
                [
                    "pebble-challtestsrv",
                    "-defaultIPv4", self.lb_address, "-defaultIPv6", "",
                    "-dns01", f"127.0.0.1:{self.dns_port}",
                    "-http01", "", "-https01", "", "-tlsalpn01", "",
                    "-management", f"127.0.0.1:{self.dns_management_port}",
                ],
                stdout=dns_log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip

    def _get(self, url: str, _port: int) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.listener_ca))
        with urllib.request.urlopen(url, context=ctx, timeout=5) as response:  # noqa: S310
            return response.read()

    def roots(self) -> str:
        """The PEM root Pebble issues under (it changes at every start)."""
        url = f"https://127.0.0.1:{self.management_port}/roots/0"
        return self._get(url, self.management_port).decode()

    def _dns(self, verb: str, data: dict) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.dns_management_port}/{verb}",
            data=json.dumps(data).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310
            pass

    def point(self, host: str, address: str) -> None:
        """Make the DNS server answer ``host`` with ``address`` (to break validation)."""
        self._dns("add-a", {"host": host, "addresses": [address]})

    def unpoint(self, host: str) -> None:
        """``host`` resolves to the load balancer again."""
        self._dns("clear-a", {"host": host})

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()
