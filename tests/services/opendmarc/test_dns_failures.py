"""What a DNS outage leaves in the results this node writes: the content filter rewrites
OpenDMARC's ``spf=fail`` (libspf2's word for an SPF record it could not fetch) and
``dmarc=none`` to ``temperror`` when its own query gets no answer, in the header the
user, Sieve and spamd read; a result DNS could establish is left alone. On real daemons:
tests/converge/test_mail_auth.py."""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
from collections.abc import Iterator
from types import ModuleType

from tests.services.opendmarc.test_opendmarc import HOST, ums_filter  # noqa: F401

DMARC_FAIL = f"{HOST}; dmarc=fail (p=reject dis=none) header.from=bank.example"
SPF_FAIL = f"{HOST}; spf=fail smtp.mailfrom=bank.example"
DKIM_NONE = f"{HOST}; dkim=none; dkim-atps=neutral"
FOREIGN = "mx.other.example; spf=fail smtp.mailfrom=bank.example"
#: Nothing listens on 127.0.0.1:53 here: every query times out.
SILENT = ["127.0.0.1"]


@contextlib.contextmanager
def resolver(module: ModuleType, rcode: int) -> Iterator[list[str]]:
    """A resolver on 127.0.0.1 answering every query with ``rcode``; yields the names
    asked. The filter always asks port 53, so its sockets are pointed at this one."""
    asked: list[str] = []
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                query, client = server.recvfrom(512)
            except TimeoutError:
                continue
            labels, at = [], 12
            while query[at]:
                labels.append(query[at + 1 : at + 1 + query[at]].decode())
                at += 1 + query[at]
            asked.append(".".join(labels))
            server.sendto(query[:2] + bytes([0x81, 0x80 | rcode]) + query[4:], client)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    original = module.socket.socket

    class ToPort(original):
        def sendto(self, data, address):
            return super().sendto(data, (address[0], port))

    module.socket.socket = ToPort
    try:
        yield asked
    finally:
        module.socket.socket = original
        stop.set()
        thread.join(5)
        server.close()


def test_results_dns_could_not_fetch_read_temperror(ums_filter: ModuleType) -> None:  # noqa: F811
    values = [DMARC_FAIL, SPF_FAIL, DKIM_NONE, FOREIGN]
    out = ums_filter.truthful_auth_results(values, HOST, SILENT, 0.2)
    assert out == [
        # DKIM did not align; the SPF that might have is unknown: not a DMARC failure.
        f"{HOST}; dmarc=temperror (p=reject dis=none) header.from=bank.example",
        f"{HOST}; spf=temperror smtp.mailfrom=bank.example",
        DKIM_NONE,
        FOREIGN,  # another server's header is not ours to correct
    ]
    none = f"{HOST}; dmarc=none (p=none dis=none) header.from=bank.example"
    assert ums_filter.truthful_auth_results([none], HOST, SILENT, 0.2) == [
        none.replace("dmarc=none", "dmarc=temperror")
    ]


def test_a_result_dns_could_establish_is_kept(ums_filter: ModuleType) -> None:  # noqa: F811
    values = [DMARC_FAIL, SPF_FAIL, DKIM_NONE]
    # NXDOMAIN is an answer: the domain has no record, so the failure is real.
    with resolver(ums_filter, 3) as asked:
        assert ums_filter.truthful_auth_results(values, HOST, ["127.0.0.1"], 2) == values
    assert asked == ["bank.example"]
    passed = [f"{HOST}; spf=pass smtp.mailfrom=good.example"]
    with resolver(ums_filter, 0) as asked:
        assert ums_filter.truthful_auth_results(passed, HOST, ["127.0.0.1"], 2) == passed
    assert asked == []  # a pass was fetched: nothing to ask
    # SERVFAIL: the resolver answers but cannot fetch this name, a temporary error.
    with resolver(ums_filter, 2):
        out = ums_filter.truthful_auth_results([SPF_FAIL], HOST, ["127.0.0.1"], 2)
    assert out == [SPF_FAIL.replace("spf=fail", "spf=temperror")]


def packet(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + cmd + data


def replies(raw: bytes) -> list[tuple[bytes, bytes]]:
    out, at = [], 0
    while at < len(raw):
        (size,) = struct.unpack(">I", raw[at : at + 4])
        out.append((raw[at + 4 : at + 5], raw[at + 5 : at + 4 + size]))
        at += 4 + size
    return out


def test_the_milter_corrects_the_header_it_delivers_and_scans(
    ums_filter: ModuleType,  # noqa: F811
) -> None:
    """Through the milter protocol: the MTA is told to change the second
    Authentication-Results (OpenDMARC's SPF one) and the message is delivered marked."""
    headers = [
        ("Authentication-Results", DMARC_FAIL),
        ("Authentication-Results", SPF_FAIL),
        ("Authentication-Results", DKIM_NONE),
        ("From", "ceo@bank.example"),
        ("Subject", "figures"),
    ]
    stream = packet(b"M", b"<ceo@bank.example>\0") + packet(b"R", b"<alice@ours.example>\0")
    for name, value in headers:
        stream += packet(b"L", name.encode() + b"\0" + value.encode() + b"\0")
    stream += packet(b"E", b"body\r\n") + packet(b"Q")
    policy = {"dmarc_failure": "reject", "sender_allow": [], "sender_block": []}
    config = {
        "authserv_id": HOST,
        "resolvers": SILENT,
        "policies": {"default": policy},
        "domains": {},
        "spamd": {"max_bytes": 1},  # not scored: no spamd here
    }
    out = io.BytesIO()
    milter = ums_filter.Milter(io.BytesIO(stream), out, config)
    milter.run()
    answers = replies(out.getvalue())
    assert (b"m", struct.pack(">I", 2) + b"Authentication-Results\0" + b"%s\0" % (
        SPF_FAIL.replace("spf=fail", "spf=temperror").encode()
    )) in answers  # fmt: skip
    # p=reject under "reject", yet delivered: the failure rested on a lookup that failed.
    assert answers[-1] == (b"c", b"")
    added = [data for cmd, data in answers if cmd == b"h"]
    assert b"X-UMS-DMARC\0temperror; action=none; domain=bank.example; policy=reject\0" in added
