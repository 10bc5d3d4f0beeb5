#!/usr/bin/env python3
"""STAND-IN for Collabora Online's coolwsd (tests only): the interface UMS uses.

Collabora Online cannot be installed on the test machines (it is not in Debian and its
packages come from Collabora's own repository), so this program serves the published
interface the product and Nextcloud use, reading the same ``coolwsd.xml`` converge
renders and behaving as coolwsd does with it:

* ``GET /hosting/discovery``: WOPI discovery XML; ``urlsrc`` is built from
  ``server_name`` and is ``https://`` when ``ssl.enable`` or ``ssl.termination`` is true;
* ``GET /hosting/capabilities``: the capabilities JSON (``convert-to`` available);
* ``POST /cool/convert-to/<format>`` (and ``/lool/``): the conversion REST API, multipart
  field ``data``; refused with 403 for a client address outside ``net.post_allow``.
  Only ``pdf`` is implemented, and the conversion is real: Debian's headless LibreOffice
  (``soffice --convert-to pdf``), the engine Collabora itself runs on;
* ``GET /browser/<hash>/cool.html?WOPISrc=...``: 403 with coolwsd's own message ("No
  acceptable WOPI hosts found matching the target host [...] in config") unless the
  WOPISrc host is in ``storage.wopi``'s alias groups (host or an alias regex);
* ``GET /browser/dist/admin/admin.html``: basic auth checked against
  ``admin_console`` (``secure_password``, PBKDF2-SHA512 as ``coolconfig`` writes it).

The configuration is read once at start, like coolwsd: a changed file needs a restart.
``standin.py service start|stop|restart`` is what the node's ``service coolwsd ...``
runs. Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

CONFIG = Path(os.environ.get("COOLWSD_CONFIG", "/etc/coolwsd/coolwsd.xml"))
STATE_DIR = Path(os.environ.get("COOLWSD_STANDIN_DIR", "/var/lib/coolwsd-standin"))
PIDFILE = STATE_DIR / "coolwsd.pid"
LOG = STATE_DIR / "coolwsd.log"
PORT = int(os.environ.get("COOLWSD_PORT", "9980"))
HASH = "5ac1e0a"  # the build hash in coolwsd's /browser/<hash>/ URLs
APPS = {
    "writer": ("odt", "ott", "docx", "doc", "rtf", "txt"),
    "calc": ("ods", "ots", "xlsx", "xls", "csv"),
    "impress": ("odp", "otp", "pptx", "ppt"),
}


class Config:
    def __init__(self, path: Path) -> None:
        root = ET.parse(path).getroot()  # noqa: S314 (the file converge rendered; stdlib only)
        self.server_name = (root.findtext("server_name") or "").strip()
        self.tls = "true" in (root.findtext("ssl/enable"), root.findtext("ssl/termination"))
        self.post_allow = [
            re.compile(h.text or "") for h in root.findall("net/post_allow/host") if h.text
        ]
        wopi = root.find("storage/wopi")
        self.wopi_allowed = wopi is not None and wopi.get("allow") == "true"
        self.hosts: set[str] = set()
        self.aliases: list[re.Pattern] = []
        for group in root.findall("storage/wopi/alias_groups/group"):
            for host in group.findall("host"):
                if host.get("allow") == "true" and host.text:
                    self.hosts.add((urlsplit(host.text.strip()).hostname or "").lower())
            self.aliases += [re.compile(a.text.strip()) for a in group.findall("alias") if a.text]
        self.admin_enabled = root.findtext("admin_console/enable") == "true"
        self.admin_user = root.findtext("admin_console/username") or ""
        self.admin_hash = root.findtext("admin_console/secure_password") or ""

    def wopi_host_allowed(self, wopi_src: str) -> bool:
        parts = urlsplit(wopi_src)
        host = (parts.hostname or "").lower()
        if not self.wopi_allowed or not host:
            return False
        port = parts.port or (443 if parts.scheme == "https" else 80)
        url = f"{parts.scheme}://{host}:{port}"
        return host in self.hosts or any(a.fullmatch(url) for a in self.aliases)

    def admin_ok(self, user: str, password: str) -> bool:
        try:
            _pbkdf2, _algo, rounds, salt, digest = self.admin_hash.split(".")
        except ValueError:
            return False
        got = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), bytes.fromhex(salt), int(rounds), len(digest) // 2
        )
        return (
            self.admin_enabled
            and user == self.admin_user
            and hmac.compare_digest(got.hex(), digest)
        )


def discovery(conf: Config) -> bytes:
    scheme = "https" if conf.tls else "http"
    base = f"{scheme}://{conf.server_name or 'localhost'}/browser/{HASH}/cool.html?"
    root = ET.Element("wopi-discovery")
    zone = ET.SubElement(root, "net-zone", name=f"external-{scheme}")
    for app, extensions in APPS.items():
        element = ET.SubElement(zone, "app", name=app)
        for ext in extensions:
            ET.SubElement(element, "action", default="true", ext=ext, name="edit", urlsrc=base)
    ET.SubElement(zone, "app", name="Capabilities").append(
        ET.Element("action", ext="", name="getinfo", urlsrc=f"{scheme}://"
                   f"{conf.server_name or 'localhost'}/hosting/capabilities")
    )  # fmt: skip
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root)


CAPABILITIES = {
    "convert-to": {"available": True, "endpoint": "/cool/convert-to"},
    "hasMobileSupport": True,
    "hasProxyPrefix": False,
    "hasTemplateSaveAs": False,
    "hasTemplateSource": True,
    "hasZoteroSupport": False,
    "productName": "Collabora Online stand-in (UMS tests)",
    "productVersion": "24.04",
}


def to_pdf(filename: str, data: bytes) -> bytes:
    """The real conversion: LibreOffice headless, a private profile per request."""
    work = Path(tempfile.mkdtemp(prefix="coolwsd-standin-"))
    try:
        name = Path(filename).name or "document"
        source = work / name
        source.write_bytes(data)
        subprocess.run(
            ["soffice", f"-env:UserInstallation=file://{work}/profile", "--headless",
             "--convert-to", "pdf", "--outdir", str(work / "out"), str(source)],
            check=True, capture_output=True, timeout=120, env={**os.environ, "HOME": str(work)},
        )  # fmt: skip
        return (work / "out" / (source.stem + ".pdf")).read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Handler(BaseHTTPRequestHandler):
    conf: Config

    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write(f"{self.client_address[0]} {fmt % args}\n")

    def reply(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/hosting/discovery":
            return self.reply(200, discovery(self.conf), "text/xml")
        if url.path == "/hosting/capabilities":
            return self.reply(200, json.dumps(CAPABILITIES).encode(), "application/json")
        if re.fullmatch(r"/browser/[0-9a-f]+/cool\.html", url.path):
            wopi_src = (parse_qs(url.query).get("WOPISrc") or [""])[0]
            if not self.conf.wopi_host_allowed(wopi_src):
                host = urlsplit(wopi_src).hostname or ""
                message = (
                    f"No acceptable WOPI hosts found matching the target host [{host}] in config"
                )
                return self.reply(403, message.encode())
            return self.reply(200, b"<!DOCTYPE html><title>Collabora Online</title>", "text/html")
        if url.path == "/browser/dist/admin/admin.html":
            auth = self.headers.get("Authorization", "")
            user = password = ""
            if auth.startswith("Basic "):
                user, _sep, password = base64.b64decode(auth[6:]).decode().partition(":")
            if not self.conf.admin_ok(user, password):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="online"')
                self.send_header("Content-Length", "0")
                return self.end_headers()
            return self.reply(200, b"<!DOCTYPE html><title>Admin console</title>", "text/html")
        return self.reply(404, b"not found")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        match = re.fullmatch(r"/(?:cool|lool)/convert-to(?:/([a-z]+))?", url.path)
        if not match:
            return self.reply(404, b"not found")
        client = self.client_address[0]
        if not any(p.fullmatch(client) for p in self.conf.post_allow):
            return self.reply(403, f"convert-to is not allowed from {client}".encode())
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + self.headers.get("Content-Type", "").encode() + b"\r\n\r\n" + body
        )
        fields = {}
        if message.is_multipart():
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                fields[name] = (part.get_filename() or "", part.get_payload(decode=True) or b"")
        fmt = match.group(1) or (fields.get("format", ("", b""))[1].decode())
        if "data" not in fields:
            return self.reply(400, b"no data field")
        if fmt != "pdf":
            return self.reply(400, f"format {fmt!r} not supported by the stand-in".encode())
        try:
            pdf = to_pdf(*fields["data"])
        except (subprocess.SubprocessError, OSError) as exc:
            return self.reply(400, f"conversion failed: {exc}".encode())
        return self.reply(200, pdf, "application/pdf")


class Server(ThreadingHTTPServer):
    def server_bind(self) -> None:
        # HTTPServer looks up getfqdn() of the bound address first, which waits for DNS
        # on a test node whose resolver does not answer; the name is not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "coolwsd", self.server_address[1]


def serve() -> int:
    Handler.conf = Config(CONFIG)
    server = Server(("0.0.0.0", PORT), Handler)  # noqa: S104 (coolwsd's listen=any)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()
    return 0


def _pid() -> int | None:
    """The running server's pid; None when gone or a zombie (PID 1 reaps slowly here)."""
    try:
        pid = int(PIDFILE.read_text().strip())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return None if state == "Z" else pid


def stop() -> None:
    pid = _pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if _pid() is None:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def start() -> int:
    if _pid() is not None:
        return 0
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    PIDFILE.write_text(str(process.pid))
    import socket

    for _ in range(100):
        if process.poll() is not None:
            print(LOG.read_text()[-2000:], file=sys.stderr)
            return 1
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
            return 0
        except OSError:
            time.sleep(0.1)
    print(f"not listening on {PORT} after 10 s:\n{LOG.read_text()[-2000:]}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        return serve()
    if argv[:1] == ["service"] and len(argv) == 2:
        if argv[1] in ("stop", "restart"):
            stop()
        return 0 if argv[1] == "stop" else start()
    print("usage: standin.py serve | service start|stop|restart", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
