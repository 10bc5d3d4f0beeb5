"""Certificate renewal reaches the load balancer: renew -> LB marked dirty -> converge.

A real sshd node with the load balancer role runs Debian's nginx in its own network and
mount namespaces (its /etc/nginx is private, port 443 is its own). It is approved, which
converges it with a certificate 10 days from expiry; the scheduled renewal task then
replaces the certificate in the controller's store, which marks the node dirty, and the
converge that follows installs the new one: a TLS client sees the new serial.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography import x509

from deploy import dirty
from deploy.connector.keys import public_key_openssh
from deploy.services import registry
from deploy.services.nginx import FileCertificateStore, LocalCAIssuer, NginxService
from servers import actions as server_actions
from servers.choices import NodeStatus
from servers.models import Node, Zone
from tests.fixtures import Cast
from tests.harness.sshnodes import DEFAULT_PRIVATE_PATHS, NodeCluster, TestNode
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401
from tests.servers.nodes import install_stand_ins, new_pkey, registered_node

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

HOST = "webmail.ums.test"
RUNTIME = "/var/lib/ums-test-nginx"  # pid, logs and temp files of the node's nginx


def _served_serial(address: str, ca_file: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection((address, 443), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
def lb_node(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestNode]:
    monkeypatch.setattr(registry, "SERVICES", [NginxService(runtime_dir=RUNTIME)])
    cluster = NodeCluster(
        tmp_path_factory.mktemp("lb"),
        1,
        public_key_openssh(new_pkey(), "harness-only"),
        private_paths=(*DEFAULT_PRIVATE_PATHS, RUNTIME, "/usr/local/sbin"),
    )
    cluster.start()
    try:
        if cluster.mode != "netns" or not cluster.isolated:
            pytest.skip("the load balancer needs its own network namespace (port 443)")
        tnode = cluster.nodes[0]
        install_stand_ins(tnode)
        keys = tnode.path("/root/.ssh/authorized_keys")
        keys.parent.mkdir(mode=0o700, exist_ok=True)
        keys.write_text(public_key_openssh(controller_pkey, "ums-controller-v1") + "\n")
        dirty.forget(range(1, 200))
        yield tnode
    finally:
        cluster.stop()


def test_renewal_marks_the_load_balancer_dirty_and_converge_serves_the_new_certificate(
    tmp_path: Path,
    settings,
    cast: Cast,
    zone: Zone,  # noqa: F811
    controller_key,  # noqa: F811
    lb_node: TestNode,
) -> None:
    from deploy.services.nginx import tasks
    from ums.models import Job

    cert_dir = tmp_path / "tls"
    settings.UMS_TLS_CERT_DIR = str(cert_dir)
    settings.UMS_LB_HOSTNAMES = {HOST: [HOST]}
    settings.UMS_CONVERGE = {"web_hostnames": {"webmail": HOST}}
    settings.UMS_AUTO_CONVERGE = True
    settings.UMS_CONVERGE_ON_APPROVAL = True

    # The store holds a certificate issued 80 days ago by the controller's CA: 10 days
    # left, inside the 30-day renewal window.
    issuer = LocalCAIssuer.load_or_create(cert_dir / "ca")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(issuer.ca_cert_pem)
    store = FileCertificateStore(cert_dir)
    store.put(HOST, issuer.issue([HOST], now=dt.datetime.now(dt.UTC) - dt.timedelta(days=80)))
    old = store.get(HOST)
    assert old is not None

    # A web node for the upstream (never contacted: only TLS is checked here). Being a
    # webmail node, approval marks it dirty too; its converge fails for want of a host key,
    # which is not what this test is about: only the load balancer's jobs are checked.
    web = Node.objects.create(
        customer=zone.customer,
        customer_path=zone.customer_path,
        zone=zone,
        hostname="web1.ums.test",
        addresses=["127.0.0.1"],
        ssh_address="127.0.0.1",
        roles=["webmail"],
        status=NodeStatus.ACTIVE,
    )
    node = registered_node(zone, lb_node, roles=["loadbalancer"])
    server_actions.approve_node(actor=cast.sub_admin, node=node)
    failed = [
        j.error for j in Job.objects.filter(status=Job.FAILED).exclude(params__node_id=web.pk)
    ]
    assert not failed, failed
    assert _served_serial(lb_node.address, ca_file) == old.serial

    renewed = tasks.renew_lb_certificates.apply().get()
    assert renewed == [HOST]
    new = store.get(HOST)
    assert new is not None and new.serial != old.serial
    converges = Job.objects.filter(kind="node.converge", params__node_id=node.pk)
    assert converges.filter(params__reason__startswith="certificates renewed").exists()
    failed = [
        j.error for j in Job.objects.filter(status=Job.FAILED).exclude(params__node_id=web.pk)
    ]
    assert not failed, failed

    # nginx reloads gracefully: new connections get the new certificate.
    deadline = time.monotonic() + 30
    while _served_serial(lb_node.address, ca_file) != new.serial:
        assert time.monotonic() < deadline, "nginx still serves the old certificate"
        time.sleep(0.3)
    assert tasks.renew_lb_certificates.apply().get() == []  # nothing due: no converge
