"""The outside world for mail authentication tests: an SMTP sink (the receiving MTA of an
external domain, reached through ``outbound_relay``) and an authoritative DNS server
answering TXT queries from a dict (what the domain's owner published).

Both are small, real network servers in threads: Postfix talks SMTP to the sink over the
test bridge, and the DKIM DNS check resolves through the DNS server with dnspython, as
it would through any resolver set in ``UMS_DNS_RESOLVER``.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class _SinkHandler(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply("220 sink.outside.test ESMTP")
        sender, recipients = "", []
        while line := self.rfile.readline():
            command = line.decode(errors="replace").strip()
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 sink.outside.test")
            elif verb == "MAIL":
                sender, recipients = command[10:].strip("<> "), []
                self.reply("250 ok")
            elif verb == "RCPT":
                recipients.append(command[8:].strip("<> "))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go ahead")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                    data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                self.server.received.append((sender, recipients, b"".join(data)))  # type: ignore[attr-defined]
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class Sink:
    """Messages received so far: (envelope sender, recipients, raw message)."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.address, self.port = server.server_address[:2]

    @property
    def received(self) -> list[tuple[str, list[str], bytes]]:
        return self.server.received  # type: ignore[attr-defined]

    def wait_for(self, marker: bytes, timeout: float = 60) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _sender, _rcpts, raw in self.received:
                if marker in raw:
                    return raw
            time.sleep(0.2)
        raise AssertionError(f"{marker!r} never reached the sink; got {len(self.received)}")


@contextlib.contextmanager
def smtp_sink(address: str) -> Iterator[Sink]:
    server = _Server((address, 0), _SinkHandler)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Sink(server)
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def txt_server(
    records: dict[str, list[str]], address: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """A UDP DNS server answering TXT from ``records`` (name -> values; the dict may
    change while it runs); yields "address:port" for UMS_DNS_RESOLVER."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().lower()
            values = records.get(name)
            # A name above a record (``_domainkey.example.``) exists, empty: NXDOMAIN
            # there would end a resolver's walk down to the record (qname minimisation).
            above = any(known.endswith("." + name) or name == "." for known in records)
            if values is None and not above:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif values is not None and question.rdtype == dns.rdatatype.TXT:
                chunks = [
                    " ".join(f'"{v[i : i + 255]}"' for i in range(0, len(v), 255)) for v in values
                ]
                response.answer.append(dns.rrset.from_text(name, 60, "IN", "TXT", *chunks))
            sock.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"{address}:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        sock.close()
