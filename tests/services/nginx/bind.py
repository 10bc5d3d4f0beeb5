"""A real BIND 9 (Debian ``bind9``) authoritative for ``ums.test``, taking RFC 2136 updates
signed with a TSIG key, for DNS-01 against Pebble.

Private config, zone and journal in the test's folder, a free port on 127.0.0.1, no rndc;
stopped by PID at teardown. The key may change only TXT records in the zone, as the README
tells operators to grant.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from tests.services.nginx.pebble import free_port

ZONE = "ums.test"
KEY_NAME = "ums-acme."


@dataclass
class Bind:
    folder: Path
    address: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    secret: str = field(default_factory=lambda: base64.b64encode(os.urandom(32)).decode())
    process: subprocess.Popen | None = None
    #: Extra zone-file lines (the mail authentication tests publish SPF, DKIM, DMARC).
    records: str = ""
    #: The zone served (the mail tests need one outside ".test", which libunbound, and
    #: so OpenDKIM, answers locally as NXDOMAIN).
    zone: str = ZONE

    @property
    def server(self) -> str:
        return f"{self.address}:{self.port}"

    def start(self) -> Bind:
        named = shutil.which("named") or "/usr/sbin/named"
        if not Path(named).exists():
            raise RuntimeError("Debian package bind9 is not installed")
        self.folder.mkdir(parents=True, exist_ok=True)
        zone_file = self.folder / f"{self.zone}.zone"
        zone_file.write_text(
            "$TTL 60\n"
            f"@ IN SOA ns.{self.zone}. hostmaster.{self.zone}. 1 60 60 600 60\n"
            f"@ IN NS ns.{self.zone}.\n"
            f"ns IN A {self.address}\n"
            f"public IN A {self.address}\n" + self.records
        )
        config = self.folder / "named.conf"
        config.write_text(
            f"""options {{
  directory "{self.folder}";
  pid-file "{self.folder}/named.pid";
  listen-on port {self.port} {{ {self.address}; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  allow-query {{ any; }};
}};
controls {{ }};
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{self.secret}"; }};
zone "{self.zone}" {{
  type primary;
  file "{zone_file}";
  update-policy {{ grant {KEY_NAME} wildcard *.{self.zone} TXT; }};
}};
"""
        )
        log = open(self.folder / "named.log", "wb")  # noqa: SIM115 (kept open)
        self.process = subprocess.Popen(
            [named, "-g", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 15
        while True:
            query = dns.message.make_query(f"ns.{self.zone}", dns.rdatatype.A)
            with contextlib.suppress(OSError, dns.exception.DNSException):  # not ready yet
                if dns.query.tcp(query, self.address, port=self.port, timeout=1).answer:
                    return self
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(
                    "named did not start: " + (self.folder / "named.log").read_text()[-2000:]
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
