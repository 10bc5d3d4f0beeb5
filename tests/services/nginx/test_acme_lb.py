"""ACME end to end: a real Pebble issues, the real nginx load balancer answers HTTP-01 and
then serves the certificate, renewal replaces it, a failure is alerted and changes nothing.

The load balancer is an sshd node with Debian's nginx in its own network and mount
namespaces (port 80 and 443 its own). Pebble runs in the root namespace; its DNS server
(pebble-challtestsrv) answers every name with the node's address, so validation really
fetches ``http://<name>/.well-known/acme-challenge/<token>`` from the node's nginx, which
serves what the controller pushed over SSH. Pebble issues 20-day certificates here, so
every Pebble certificate is inside the 30-day renewal window: the second pass renews.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography import x509

from deploy import dirty
from deploy.certificate_models import LbCertificate
from deploy.connector.keys import public_key_openssh
from deploy.lb_certificates import ALERT_KIND, set_certificate_issuer
from deploy.services import registry
from deploy.services.nginx import FileCertificateStore, LocalCAIssuer, NginxService
from servers import actions as server_actions
from servers.choices import NodeStatus
from servers.models import Node, NodeAlert, Zone
from tests.fixtures import Cast
from tests.harness.sshnodes import DEFAULT_PRIVATE_PATHS, NodeCluster, TestNode
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401
from tests.servers.nodes import install_stand_ins, new_pkey, registered_node
from tests.services.nginx.pebble import Pebble

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

PUBLIC = "webmail.ums.test"  # ACME
PRIVATE = "files.ums.test"  # keeps the local CA
RUNTIME = "/var/lib/ums-test-nginx"


def _served(address: str, host: str, cafile: Path) -> x509.Certificate:
    """The certificate nginx serves for ``host``; the handshake verifies it with ``cafile``."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection((address, 443), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _wait_served(address: str, host: str, cafile: Path, serial: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if _served(address, host, cafile).serial_number == serial:
                return
        except ssl.SSLError:
            pass  # still the previous certificate, from another CA
        assert time.monotonic() < deadline, f"nginx does not serve serial {serial:x}"
        time.sleep(0.3)


@pytest.fixture
def lb_node(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestNode]:
    service = NginxService(runtime_dir=RUNTIME, acme_root=f"{RUNTIME}/acme")
    monkeypatch.setattr(registry, "SERVICES", [service])
    cluster = NodeCluster(
        tmp_path_factory.mktemp("lb"),
        1,
        public_key_openssh(new_pkey(), "harness-only"),
        private_paths=(*DEFAULT_PRIVATE_PATHS, RUNTIME, "/usr/local/sbin"),
    )
    cluster.start()
    try:
        if cluster.mode != "netns" or not cluster.isolated:
            pytest.skip("the load balancer needs its own network namespace (ports 80, 443)")
        tnode = cluster.nodes[0]
        install_stand_ins(tnode)
        keys = tnode.path("/root/.ssh/authorized_keys")
        keys.parent.mkdir(mode=0o700, exist_ok=True)
        keys.write_text(public_key_openssh(controller_pkey, "ums-controller-v1") + "\n")
        dirty.forget(range(1, 200))
        yield tnode
    finally:
        cluster.stop()


@pytest.fixture
def pebble(tmp_path: Path, lb_node: TestNode) -> Iterator[Pebble]:
    server = Pebble(tmp_path / "pebble", lb_node.address, 80, validity_seconds=20 * 86400)
    server.start()
    yield server
    server.stop()


def _renew() -> list[str]:
    from deploy.services.nginx import tasks

    return tasks.renew_lb_certificates.apply().get()


def test_load_balancer_serves_renews_and_keeps_a_pebble_certificate(
    tmp_path: Path,
    settings,
    cast: Cast,
    zone: Zone,  # noqa: F811
    controller_key,  # noqa: F811
    lb_node: TestNode,
    pebble: Pebble,
) -> None:
    from ums.models import Job

    cert_dir = tmp_path / "tls"
    settings.UMS_TLS_CERT_DIR = str(cert_dir)
    settings.UMS_LB_HOSTNAMES = {PRIVATE: [PRIVATE]}
    settings.UMS_CONVERGE = {"web_hostnames": {"webmail": PUBLIC, "cloudfiles": PRIVATE}}
    settings.UMS_AUTO_CONVERGE = True
    settings.UMS_CONVERGE_ON_APPROVAL = True
    settings.UMS_ACME_DIRECTORY = pebble.directory_url
    settings.UMS_ACME_CA_BUNDLE = str(pebble.listener_ca)
    settings.UMS_ACME_EMAIL = "hostmaster@ums.test"
    store = FileCertificateStore(cert_dir)
    local_ca = tmp_path / "local-ca.pem"
    pebble_root = tmp_path / "pebble-root.pem"
    pebble_root.write_text(pebble.roots())

    set_certificate_issuer(actor=cast.root_admin, name=PUBLIC, issuer="acme")  # an operator
    # No load balancer yet: both names get local-CA certificates so nginx can start.
    assert _renew() == [PRIVATE, PUBLIC]
    local_ca.write_text(LocalCAIssuer.load_or_create(cert_dir / "ca").ca_cert_pem)
    private_serial = store.get(PRIVATE).serial  # type: ignore[union-attr]

    # A web node for the upstreams, never contacted: its own converge (it is a webmail
    # node, so approval marks it dirty) fails for want of a host key and is not checked.
    web = Node.objects.create(
        customer=zone.customer,
        customer_path=zone.customer_path,
        zone=zone,
        hostname="web1.ums.test",
        addresses=["127.0.0.1"],
        ssh_address="127.0.0.1",
        roles=["webmail", "cloudfiles"],
        status=NodeStatus.ACTIVE,
    )
    node = registered_node(zone, lb_node, roles=["loadbalancer"])
    server_actions.approve_node(actor=cast.sub_admin, node=node)
    assert not [
        j.error for j in Job.objects.filter(status=Job.FAILED).exclude(params__node_id=web.pk)
    ]
    _served(lb_node.address, PUBLIC, local_ca)  # verifies against the local CA

    # Issuance: the load balancer answers HTTP-01, then serves Pebble's certificate.
    started = time.monotonic()
    assert _renew() == [PUBLIC]
    issued_in = time.monotonic() - started
    first = store.get(PUBLIC)
    assert first is not None
    _wait_served(lb_node.address, PUBLIC, pebble_root, first.serial)
    s_client = subprocess.run(
        ["openssl", "s_client", "-connect", f"{lb_node.address}:443", "-servername", PUBLIC,
         "-CAfile", str(pebble_root), "-verify_return_error", "-verify_hostname", PUBLIC],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert s_client.returncode == 0, s_client.stdout[-2000:] + s_client.stderr[-2000:]
    assert "Verify return code: 0 (ok)" in s_client.stdout
    assert _served(lb_node.address, PRIVATE, local_ca).serial_number == private_serial
    row = LbCertificate.objects.get(name=PUBLIC)
    assert row.order_url == "" and row.last_error == "" and row.installed_serial
    print(f"ACME issuance + converge: {issued_in:.1f} s")

    # Renewal: a 20-day certificate is inside the 30-day window; the new one is served.
    assert _renew() == [PUBLIC]
    second = store.get(PUBLIC)
    assert second is not None and second.serial != first.serial
    _wait_served(lb_node.address, PUBLIC, pebble_root, second.serial)

    # Failure: the name now resolves where nothing answers the challenge. The reason is
    # alerted on the load balancer and logged in the job; the current certificate stays.
    pebble.point(PUBLIC, "127.0.0.9")
    assert _renew() == []
    alert = NodeAlert.objects.get(node=node, kind=ALERT_KIND, resolved_at=None)
    assert PUBLIC in alert.message and "challenge failed" in alert.message, alert.message
    job = Job.objects.filter(kind="lb.renew_certificates").latest("pk")
    assert job.status == Job.FAILED and "challenge failed" in job.error, job.log
    assert "the current certificate stays in place" in job.log
    assert "challenge failed" in LbCertificate.objects.get(name=PUBLIC).last_error
    assert store.get(PUBLIC).serial == second.serial  # type: ignore[union-attr]
    assert _served(lb_node.address, PUBLIC, pebble_root).serial_number == second.serial

    # Fixed: the next run succeeds and resolves the alert.
    pebble.unpoint(PUBLIC)
    renewed = _renew()
    assert renewed == [PUBLIC], Job.objects.filter(kind="lb.renew_certificates").latest("pk").log
    assert not NodeAlert.objects.filter(node=node, kind=ALERT_KIND, resolved_at=None).exists()
    assert not [
        j.error
        for j in Job.objects.filter(status=Job.FAILED, kind="node.converge").exclude(
            params__node_id=web.pk
        )
    ]
