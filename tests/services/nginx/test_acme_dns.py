"""DNS-01 against a real Pebble whose lookups go to a real BIND, the TXT records written by
RFC 2136 updates signed with TSIG (deploy/services/nginx/acme_dns.py), and the renewal
pass choosing DNS-01 with no load balancer at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from deploy.certificate_models import LbCertificate
from deploy.services.nginx.acme import DNS01, AcmeError, AcmeIssuer, new_account_key
from deploy.services.nginx.acme_dns import Rfc2136Publisher
from deploy.services.nginx.certs import FileCertificateStore
from tests.fixtures import Cast
from tests.services.nginx.bind import KEY_NAME, ZONE, Bind
from tests.services.nginx.pebble import Pebble, free_port
from tests.services.nginx.test_acme import _verify_chain

NAME = f"public.{ZONE}"
RECORD = f"_acme-challenge.{NAME}"


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[Bind]:
    server = Bind(tmp_path / "bind").start()
    yield server
    server.stop()


@pytest.fixture
def pebble(tmp_path: Path, bind: Bind) -> Iterator[Pebble]:
    # Nothing answers HTTP-01 (the port is free and unused): only DNS-01 can succeed.
    server = Pebble(tmp_path / "pebble", "127.0.0.1", free_port(), dns_server=bind.server)
    server.start()
    yield server
    server.stop()


def _publisher(bind: Bind, secret: str | None = None) -> Rfc2136Publisher:
    return Rfc2136Publisher(
        server=bind.address,
        port=bind.port,
        zone=ZONE,
        key_name=KEY_NAME,
        secret=secret or bind.secret,
    )


def test_dns01_issues_through_rfc2136_updates_and_cleans_up(
    tmp_path: Path, bind: Bind, pebble: Pebble
) -> None:
    publisher = _publisher(bind)
    seen: list[set[str]] = []

    def publish(record: str, value: str) -> None:
        publisher.publish(record, value)
        seen.append(publisher.txt(record))  # what the CA will read from the real server

    issuer = AcmeIssuer(pebble.directory_url, new_account_key(), ca_bundle=str(pebble.listener_ca))
    bundle = issuer.issue(
        [NAME],
        progress=None,
        save_order=lambda progress: None,
        publish=publish,
        unpublish=publisher.unpublish,
        challenge=DNS01,
    )
    assert bundle.names == (NAME,) and bundle.key_matches
    _verify_chain(tmp_path, bundle.cert_pem, pebble.roots())
    assert len(seen) == 1 and len(next(iter(seen[0]))) == 43  # base64url SHA-256
    assert publisher.txt(RECORD) == set()  # removed after issuance


def test_a_wrong_key_or_a_name_outside_the_zone_is_refused_with_the_reason(bind: Bind) -> None:
    wrong = _publisher(bind, secret="d3JvbmcgdHNpZyBzZWNyZXQgZm9yIHRoZSB0ZXN0IQ==")
    with pytest.raises(AcmeError) as refused:
        wrong.publish(RECORD, "x" * 43)
    assert "did not take the update" in str(refused.value) or "refused" in str(refused.value)
    right = _publisher(bind)
    assert right.txt(RECORD) == set()  # nothing was written
    with pytest.raises(AcmeError, match="outside the DNS zone"):
        right.publish("_acme-challenge.mail.example.org", "x" * 43)
    # The key may change TXT records only (the policy the README asks for).
    with pytest.raises(AcmeError, match="refused"):
        update = right._update()
        update.add("www", 60, "A", "192.0.2.1")
        right._send(update, "add an A record")


@pytest.mark.django_db
def test_renewal_pass_uses_dns01_without_any_load_balancer(
    cast: Cast, tmp_path: Path, bind: Bind, pebble: Pebble, settings
) -> None:
    from deploy.lb_certificates import renew_pass, set_certificate_issuer

    settings.UMS_TLS_CERT_DIR = str(tmp_path / "certs")
    settings.UMS_ACME_DIRECTORY = pebble.directory_url
    settings.UMS_ACME_CA_BUNDLE = str(pebble.listener_ca)
    settings.UMS_ACME_CHALLENGE = "dns-01"
    settings.UMS_ACME_DNS_SERVER = bind.server
    settings.UMS_ACME_DNS_ZONE = ZONE
    settings.UMS_ACME_DNS_TSIG_KEY_NAME = KEY_NAME
    settings.UMS_ACME_DNS_TSIG_SECRET = bind.secret
    set_certificate_issuer(actor=cast.root_admin, name=NAME, issuer="acme")

    result = renew_pass()
    assert NAME in result["renewed"], result
    bundle = FileCertificateStore(Path(settings.UMS_TLS_CERT_DIR)).get(NAME)
    leaf = x509.load_pem_x509_certificate(bundle.cert_pem.encode())
    assert "Pebble" in leaf.issuer.rfc4514_string()
    row = LbCertificate.objects.get(name=NAME)
    assert row.last_error == "" and row.last_issued_at is not None
    assert _publisher(bind).txt(RECORD) == set()
