"""The ACME client against a real Pebble, HTTP-01 answered by a plain HTTP responder.

These check the protocol side (issuance, a resumed order after a crash, failure reasons)
in seconds; the load balancer end to end is in test_acme_lb.py.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.services.nginx.acme import AcmeError, AcmeIssuer, OrderProgress, new_account_key
from tests.services.nginx.pebble import Pebble, free_port

NAME = "public.ums.test"


class _Responder(http.server.BaseHTTPRequestHandler):
    answers: dict[str, str] = {}

    def do_GET(self) -> None:
        token = self.path.rsplit("/", 1)[-1]
        body = self.answers.get(token)
        if not self.path.startswith("/.well-known/acme-challenge/") or body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def responder() -> Iterator[tuple[int, dict[str, str]]]:
    answers: dict[str, str] = {}
    handler = type("Handler", (_Responder,), {"answers": answers})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], answers
    server.shutdown()
    server.server_close()


@pytest.fixture
def pebble(tmp_path: Path, responder: tuple[int, dict[str, str]]) -> Iterator[Pebble]:
    server = Pebble(tmp_path / "pebble", "127.0.0.1", responder[0]).start()
    yield server
    server.stop()


def _issuer(pebble: Pebble, key: str | None = None, url: str = "") -> AcmeIssuer:
    return AcmeIssuer(
        pebble.directory_url,
        key or new_account_key(),
        email="hostmaster@ums.test",
        account_url=url,
        ca_bundle=str(pebble.listener_ca),
    )


def _verify_chain(tmp_path: Path, fullchain: str, root: str) -> None:
    """``openssl verify`` of the leaf with Pebble's root and the served intermediates."""
    blocks = fullchain.split("-----END CERTIFICATE-----")
    leaf = blocks[0] + "-----END CERTIFICATE-----\n"
    (tmp_path / "leaf.pem").write_text(leaf)
    (tmp_path / "chain.pem").write_text(fullchain[len(leaf) - 1 :].lstrip())
    (tmp_path / "root.pem").write_text(root)
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"),
         "-untrusted", str(tmp_path / "chain.pem"), str(tmp_path / "leaf.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


pytestmark = pytest.mark.skipif(shutil.which("pebble") is None, reason="pebble not installed")


def test_issues_a_certificate_that_verifies_against_pebbles_root(
    tmp_path: Path, pebble: Pebble, responder: tuple[int, dict[str, str]]
) -> None:
    _port, answers = responder
    saved: list[OrderProgress] = []
    issuer = _issuer(pebble)
    bundle = issuer.issue(
        [NAME],
        progress=None,
        save_order=saved.append,
        publish=answers.__setitem__,
        unpublish=answers.pop,
    )
    assert bundle.names == (NAME,) and bundle.key_matches
    assert issuer.account_url.startswith("https://127.0.0.1")
    assert len(saved) == 1 and saved[0].key_pem == bundle.key_pem
    assert answers == {}  # answers removed afterwards
    _verify_chain(tmp_path, bundle.cert_pem, pebble.roots())


def test_an_order_interrupted_mid_way_is_resumed_not_restarted(
    pebble: Pebble, responder: tuple[int, dict[str, str]]
) -> None:
    _port, answers = responder
    key = new_account_key()
    saved: list[OrderProgress] = []

    class Killed(Exception):
        pass

    def die(token: str, answer: str) -> None:
        raise Killed  # the worker dies after the order was saved, before answering

    first = _issuer(pebble, key)
    with pytest.raises(AcmeError):
        first.issue(
            [NAME], progress=None, save_order=saved.append, publish=die, unpublish=answers.pop
        )
    assert len(saved) == 1

    again: list[OrderProgress] = []
    bundle = _issuer(pebble, key, first.account_url).issue(
        [NAME],
        progress=saved[0],
        save_order=again.append,
        publish=answers.__setitem__,
        unpublish=answers.pop,
    )
    assert again == []  # the same order, not a new one
    assert bundle.key_pem == saved[0].key_pem and bundle.key_matches

    # Killed after the CA issued but before the certificate was stored: the next run
    # downloads the very same certificate from the finished order.
    same = _issuer(pebble, key, first.account_url).issue(
        [NAME], progress=saved[0], save_order=again.append, publish=die, unpublish=answers.pop
    )
    assert again == [] and same.serial == bundle.serial


def test_an_unreachable_challenge_fails_with_the_cas_reason(
    pebble: Pebble, responder: tuple[int, dict[str, str]]
) -> None:
    _port, answers = responder
    pebble.point(NAME, "127.0.0.9")  # nothing listens there
    with pytest.raises(AcmeError) as failed:
        _issuer(pebble).issue(
            [NAME],
            progress=None,
            save_order=lambda p: None,
            publish=answers.__setitem__,
            unpublish=answers.pop,
        )
    message = str(failed.value)
    assert message.startswith("challenge failed: public.ums.test:"), message
    assert "127.0.0.9" in message or "refused" in message, message
