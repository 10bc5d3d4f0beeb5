"""A real Celery worker SIGKILLed in the middle of an ACME order: the job resumes the same
order (re-read from Pebble) and the load balancer ends up serving the certificate.

The kill happens at the worst moment for an ACME client: the order exists at the CA, its
URL and key are saved, and the challenge answer is being pushed to the load balancer (a
``mkdir`` gate on the node holds the push while the worker is killed). Nothing is done by
hand afterwards: the worker is restarted, beat's reconciler re-dispatches the job whose
heartbeat stopped, and the test only waits.
"""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path

import pytest
from django.utils import timezone

from deploy.certificate_models import LbCertificate
from deploy.lb_certificates import JOB_KIND, set_certificate_issuer
from deploy.services.nginx import FileCertificateStore
from servers import actions as server_actions
from servers.choices import NodeStatus
from servers.models import Node, Zone
from tests.fixtures import Cast
from tests.harness.sshnodes import TestNode
from tests.harness.worker import celery_stack, wait_for
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401
from tests.servers.nodes import registered_node
from tests.services.nginx.pebble import Pebble
from tests.services.nginx.test_acme_lb import PUBLIC, _served, lb_node, pebble  # noqa: F401
from ums.models import Job

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

STALE = 6
GATE_DIR = "/usr/local/sbin"
# Holds only the challenge push (converge's own mkdir calls pass straight through).
MKDIR_GATE = f"""#!/bin/sh
case "$*" in
  *acme-challenge*)
    if [ -e {GATE_DIR}/mkdir.gate ]; then
      : > {GATE_DIR}/mkdir.waiting
      while [ -e {GATE_DIR}/mkdir.gate ]; do sleep 0.2; done
    fi;;
esac
exec /bin/mkdir "$@"
"""


def test_worker_killed_mid_order_resumes_the_same_order_and_installs(
    tmp_path: Path,
    settings,
    cast: Cast,
    zone: Zone,  # noqa: F811
    controller_key,  # noqa: F811
    lb_node: TestNode,  # noqa: F811
    pebble: Pebble,  # noqa: F811
) -> None:
    cert_dir = tmp_path / "tls"
    converge = {"web_hostnames": {"webmail": PUBLIC}}
    settings.UMS_TLS_CERT_DIR = str(cert_dir)
    settings.UMS_CONVERGE = converge
    settings.UMS_AUTO_CONVERGE = True
    settings.UMS_CONVERGE_ON_APPROVAL = True
    settings.UMS_JOB_STALE_SECONDS = STALE
    settings.UMS_ACME_DIRECTORY = pebble.directory_url
    settings.UMS_ACME_CA_BUNDLE = str(pebble.listener_ca)
    pebble_root = tmp_path / "pebble-root.pem"
    pebble_root.write_text(pebble.roots())
    store = FileCertificateStore(cert_dir)

    # An approved load balancer serving a local-CA certificate for the ACME name, with
    # ACME off for now (in process).
    settings.UMS_ACME_DIRECTORY = ""
    set_certificate_issuer(actor=cast.root_admin, name=PUBLIC, issuer="acme")  # an operator
    from deploy.lb_certificates import renew_pass

    assert renew_pass()["renewed"] == [PUBLIC]
    settings.UMS_ACME_DIRECTORY = pebble.directory_url
    # A web node for the upstream, never contacted (its own converge fails for want of a
    # host key and is not what this test checks).
    web = Node.objects.create(
        customer=zone.customer, customer_path=zone.customer_path, zone=zone,
        hostname="web1.ums.test", addresses=["127.0.0.1"], ssh_address="127.0.0.1",
        roles=["webmail"], status=NodeStatus.ACTIVE,
    )  # fmt: skip
    node = registered_node(zone, lb_node, roles=["loadbalancer"])
    server_actions.approve_node(actor=cast.sub_admin, node=node)
    assert not [
        j.error for j in Job.objects.filter(status=Job.FAILED).exclude(params__node_id=web.pk)
    ]

    wrapper = lb_node.path(f"{GATE_DIR}/mkdir")
    wrapper.write_text(MKDIR_GATE)
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    gate, waiting = (
        lb_node.path(f"{GATE_DIR}/mkdir.gate"),
        lb_node.path(f"{GATE_DIR}/mkdir.waiting"),
    )
    gate.touch()

    env = {
        "UMS_CELERY_IMPORTS": "tests.services.nginx.acme_worker_setup",
        "UMS_TEST_TLS_CERT_DIR": str(cert_dir),
        "UMS_NODE_SETTINGS": json.dumps(converge),
        "UMS_ACME_DIRECTORY": pebble.directory_url,
        "UMS_ACME_CA_BUNDLE": str(pebble.listener_ca),
        "UMS_JOB_STALE_SECONDS": str(STALE),
        "UMS_RECONCILE_INTERVAL": "1",
        "UMS_AUTO_CONVERGE": "true",
    }
    with celery_stack(tmp_path, env=env) as (worker, _beat):
        # Never dispatched by us: the reconciler in the worker picks it up, as after a
        # lost message.
        job = Job.objects.create(
            kind=JOB_KIND, title="renew", customer_path="/", next_attempt_at=timezone.now()
        )
        wait_for(waiting.exists, timeout=90, what="the challenge push to reach the gate")
        saved = LbCertificate.objects.get(name=PUBLIC).order_url
        assert saved.startswith(f"https://127.0.0.1:{pebble.acme_port}/"), saved
        worker.kill()
        gate.unlink()
        time.sleep(1)
        worker.restart()

        def done() -> bool:
            job.refresh_from_db()
            return job.status in (Job.SUCCEEDED, Job.FAILED)

        wait_for(done, timeout=120, what="the renewal job to finish after the kill")
        assert job.status == Job.SUCCEEDED, (job.error, job.log, worker.log_tail())
        assert job.attempts >= 2
        orders = re.findall(r'"url": "([^"]+/my-order/[^"]+)"', job.log)
        assert orders and set(orders) == {saved}, job.log  # resumed, never a new order
        issued = store.get(PUBLIC)
        assert issued is not None

        def serves_pebble() -> bool:
            try:
                return _served(lb_node.address, PUBLIC, pebble_root).serial_number == issued.serial
            except OSError:
                return False

        wait_for(serves_pebble, timeout=60, what="the load balancer to serve the new certificate")
    row = LbCertificate.objects.get(name=PUBLIC)
    assert row.order_url == "" and row.installed_serial == format(issued.serial, "x")
