"""A worker killed while an IMAP node applies new mail store settings: the converge that
sets the compression hangs in ``zfs set`` (a gate in the node's ``/usr/local/sbin``), the
worker is SIGKILLed there, then restarted; without any manual step the node converges
and ``zfs get`` shows the new compression on the domain's dataset. Real Celery worker and
beat (tests/harness/worker.py), real node with a zfs-fuse pool (tests/converge/fleet.py).
"""

from __future__ import annotations

import json
import stat

import pytest
from django.urls import reverse

from deploy.models import NodeConvergeState
from tests.converge.conftest import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    zone,
)
from tests.converge.fleet import Fleet
from tests.converge.test_mail_store import IMAP, PASSWORD, _failed_jobs, _zfs_get
from tests.fixtures import Cast, token_client
from tests.harness.worker import celery_stack, wait_for
from ums import jobs
from ums.models import Job

from .test_snapshots_node import store_fleet  # noqa: F401  (an IMAP and an SMTP node, a pool)

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "storefault.example"
GATE_DIR = "/usr/local/sbin"
# Hangs "zfs set" while the gate file exists, then runs the real zfs; reads pass.
WRAPPER = f"""#!/bin/sh
if [ "$1" = set ] && [ -e {GATE_DIR}/zfs.gate ]; then
  : > {GATE_DIR}/zfs.waiting
  while [ -e {GATE_DIR}/zfs.gate ]; do sleep 0.2; done
fi
exec /usr/sbin/zfs "$@"
"""
STALE = LEASE = 6


def test_worker_killed_in_zfs_set_the_store_still_gets_its_compression(
    cast: Cast,
    store_fleet: Fleet,  # noqa: F811
    settings,
    tmp_path,
) -> None:
    jobs.load_handlers()
    f, pool = store_fleet, store_fleet.pools[IMAP]
    imap, tnode = f.nodes[IMAP], f.tnodes[IMAP]
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("mail-domain-list"), {"name": DOMAIN, "customer": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": response.json()["id"], "localPart": "alice", "password": PASSWORD},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert not _failed_jobs(), _failed_jobs()
    dataset = f"{pool}/mail/{DOMAIN}"
    assert _zfs_get(f, dataset)["compression"] == "on"

    wrapper = tnode.path(f"{GATE_DIR}/zfs")
    wrapper.write_text(WRAPPER)
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    gate, waiting = tnode.path(f"{GATE_DIR}/zfs.gate"), tnode.path(f"{GATE_DIR}/zfs.waiting")
    gate.touch()
    settings.UMS_JOB_STALE_SECONDS = STALE
    settings.UMS_CONVERGE_LEASE_SECONDS = LEASE
    settings.UMS_CONVERGE_RETRY_MAX_SECONDS = 10
    env = {
        "UMS_CELERY_IMPORTS": "tests.backup.fault_worker_setup",
        "UMS_NODE_SETTINGS": json.dumps(settings.UMS_CONVERGE),
        "UMS_JOB_STALE_SECONDS": str(STALE),
        "UMS_CONVERGE_LEASE_SECONDS": str(LEASE),
        "UMS_CONVERGE_RETRY_MAX_SECONDS": "10",
        "UMS_RECONCILE_INTERVAL": "1",
        "UMS_AUTO_CONVERGE": "true",
    }

    def converged() -> bool:
        state = NodeConvergeState.objects.get(node=imap)
        return (
            state.applied_generation >= state.desired_generation
            and not state.lease_owner
            and not Job.objects.filter(
                kind="node.converge", status__in=(Job.PENDING, Job.RUNNING)
            ).exists()
        )

    try:
        with celery_stack(tmp_path, env=env) as (worker, _beat):
            response = client.patch(
                f"/api/v1/backup/mail-stores/{imap.pk}/", {"compression": "gzip-9"}, format="json"
            )
            assert response.status_code == 200, response.content
            wait_for(waiting.exists, timeout=90, what="the converge to reach zfs set")
            worker.kill()
            gate.unlink()
            worker.start()  # as systemd's Restart=always would
            wait_for(converged, timeout=120, what="the node to converge by itself")
    finally:
        gate.unlink(missing_ok=True)
        wrapper.unlink(missing_ok=True)
    assert _zfs_get(f, dataset)["compression"] == "gzip-9"
    for job in Job.objects.filter(kind="node.converge", object_id=str(imap.pk)):
        assert job.status in Job.FINISHED and "Traceback" not in job.error, (job.pk, job.error)
