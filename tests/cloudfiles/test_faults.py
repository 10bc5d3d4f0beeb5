"""A worker killed in the middle of provisioning a Nextcloud account: the system heals.

STAND-IN: the cloudfiles node runs the Nextcloud stand-in (tests/standins/nextcloud;
Nextcloud cannot be installed here). The worker and beat are real Celery processes
(tests/harness/worker.py), the node a real namespaced sshd. The converge is stopped
after ``occ user:add`` ran and before the quota was set (a gate on ``occ user:setting``),
the worker is SIGKILLed there, the gate opened and the worker restarted as systemd would;
then the test only waits. The healed end state: the account exists once, with its quota
and group, recorded for the usage figures (``CloudAccount.active``), and the node's
applied generation equals its desired one with no lease left.
"""

from __future__ import annotations

import json
import stat

import pytest

from cloudfiles.models import CloudAccount
from deploy.models import NodeConvergeState
from tests.fixtures import Cast
from tests.harness.worker import celery_stack, wait_for
from ums.models import Job

from .conftest import CloudNode
from .helpers import assert_jobs_succeeded, client_for, customer, domain, mailbox

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

GATE = "/usr/local/sbin/occ.gate"
WAITING = "/usr/local/sbin/occ.waiting"
#: ``occ`` that hangs on ``user:setting`` while the gate file exists, then runs the
#: stand-in: the converge stops between creating the account and setting its quota.
GATED_OCC = f"""#!/bin/sh
if [ "$1" = "user:setting" ] && [ -e {GATE} ]; then
  : > {WAITING}
  while [ -e {GATE} ]; do sleep 0.2; done
fi
exec /usr/local/sbin/nextcloud-occ "$@"
"""
HEAL_BOUND = 120


def converged(cloud: CloudNode) -> bool:
    state = NodeConvergeState.objects.filter(node=cloud.node).first()
    if state is None or state.desired_generation != state.applied_generation:
        return False
    if state.lease_owner:
        return False
    return not Job.objects.filter(
        kind="node.converge", status__in=(Job.PENDING, Job.RUNNING)
    ).exists()


def test_worker_killed_mid_provision_heals_to_the_account_with_its_quota(
    cast: Cast, cloud_node: CloudNode, settings, tmp_path
) -> None:
    client = client_for(cast)
    cid = customer(client, cast, "Fault Customer")
    dom = domain(client, cid, "fault.example")
    assert_jobs_succeeded()
    tnode = cloud_node.nextcloud.tnode
    occ = tnode.path("/usr/local/sbin/occ")
    occ.write_text(GATED_OCC)
    occ.chmod(occ.stat().st_mode | stat.S_IXUSR)
    gate, waiting = tnode.path(GATE), tnode.path(WAITING)
    gate.touch()
    settings.UMS_JOB_STALE_SECONDS = 6
    settings.UMS_CONVERGE_LEASE_SECONDS = 6
    settings.UMS_CONVERGE_RETRY_MAX_SECONDS = 10
    env = {
        "UMS_CELERY_IMPORTS": "tests.cloudfiles.worker_setup",
        "UMS_NODE_SETTINGS": json.dumps(settings.UMS_CONVERGE),
        "UMS_JOB_STALE_SECONDS": "6",
        "UMS_CONVERGE_LEASE_SECONDS": "6",
        "UMS_CONVERGE_RETRY_MAX_SECONDS": "10",
        "UMS_RECONCILE_INTERVAL": "1",
        "UMS_AUTO_CONVERGE": "true",
    }
    try:
        with celery_stack(tmp_path, env=env) as (worker, _beat):
            mailbox(client, dom, "carol", files=True, quotaMb=3000)
            wait_for(waiting.exists, timeout=90, what="the converge to reach occ user:setting")
            users = cloud_node.nextcloud.state()["users"]
            # Killed half-way: the account exists, its quota is not set yet.
            assert users["carol@fault.example"]["quota"] == "none", users
            # Nor is the account recorded for the usage figures (after the converge only).
            assert not CloudAccount.objects.filter(active=True).exists()
            worker.kill()
            gate.unlink()
            worker.start()  # as systemd's Restart=always would
            wait_for(lambda: converged(cloud_node), timeout=HEAL_BOUND, what="the node to heal")
    finally:
        gate.unlink(missing_ok=True)
    state = cloud_node.nextcloud.state()
    assert state["users"]["carol@fault.example"]["quota"] == "3000 MB"
    assert [g for g, m in state["groups"].items() if "carol@fault.example" in m] == [f"ums-c{cid}"]
    # The healing converge recorded it: carol counts in files_users.
    assert CloudAccount.objects.get(mailbox__email="carol@fault.example").active
    for job in Job.objects.filter(kind="node.converge"):
        assert job.status in Job.FINISHED and "Traceback" not in job.error, (job.pk, job.error)
