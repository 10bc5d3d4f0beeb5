"""The node's sshd sessions killed at each step of a sweep that changes the node: while a
given-up restore's clone is being unmounted, before it is destroyed, and before its
mountpoint folder is removed (each command held by a gate in the node's PATH, then every
sshd process under the listener SIGKILLed: the controller's connection drops mid-sweep).
The sweep fails with the connection, and the next snapshot pass finishes what was left
(clone and folder gone), while a running restore's clone stays mounted throughout. And
the worker running the pass SIGKILLed in the sweep's ``zfs destroy``: the pass run again
by the jobs reconciler finishes it.

The listener itself is left running: the harness starts a new sshd in a new mount
namespace, where zfs-fuse's mounts (made in the old one) are not, which no real node
does."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from typing import Any

import pytest
from django.db import connection

from backup import leftover_sweep, restore_run
from backup.restore import RESTORE_JOB
from deploy.connector.base import ConnectorError
from deploy.nodes import session
from servers.models import Node
from tests.backup.test_leftover_sweep_node import (
    BASE_ID,
    _exists,
    _job,
    snapshot_pass,
    snapshotted_domain,
)
from tests.backup.test_snapshots_node import store_fleet  # noqa: F401  (fixture)
from tests.converge.conftest import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    zone,
)
from tests.converge.fleet import Fleet
from tests.converge.test_mail_store import IMAP
from tests.faults.nodes import Gate, ZfsGate
from tests.fixtures import Cast, token_client
from tests.harness import sshnodes
from tests.harness.sshnodes import TestNode
from tests.harness.worker import celery_stack, wait_for
from ums.models import Job

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
STEPS = ("unmount", "destroy", "rmdir")
WORKER_STALE = 6


def _kill_sessions(tnode: TestNode) -> None:
    """SIGKILL every sshd session of the node and what runs under it (not the listener)."""
    assert tnode.pid is not None
    for victim in sshnodes._descendants([tnode.pid]):
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def _sweep(node: Node, pool: str, outcome: dict[str, Any]) -> None:
    try:
        with session(node) as conn:
            outcome["result"] = leftover_sweep.sweep(conn, node, pool)
    except Exception as exc:
        outcome["error"] = exc
    finally:
        connection.close()


def _clones(f: Fleet, pool: str) -> list[str]:
    return f.in_node(IMAP, ["zfs", "list", "-H", "-o", "name", "-r", pool]).stdout.split()


def test_sshd_killed_at_each_step_of_a_sweep_the_next_pass_finishes_it(
    cast: Cast,
    store_fleet: Fleet,  # noqa: F811
) -> None:
    f, pool = store_fleet, store_fleet.pools[IMAP]
    node, tnode = f.nodes[IMAP], f.tnodes[IMAP]
    client = token_client(cast.sub_admin)
    domain_id, snap = snapshotted_domain(client, cast)
    running = _job(BASE_ID + 20, RESTORE_JOB, Job.RUNNING)
    with session(node) as conn:
        live_mount = restore_run.ensure_clone(conn, snap, running.pk)
    zfs_gate, rmdir_gate = ZfsGate(tnode), Gate(tnode, "rmdir", "/usr/bin/rmdir")
    try:
        for step, verb in enumerate(STEPS):
            dead = _job(BASE_ID + 21 + step, RESTORE_JOB, Job.FAILED, ended_hours_ago=2)
            clone = f"{pool}/ums-restore-{dead.pk}"
            with session(node) as conn:
                mount = restore_run.ensure_clone(conn, snap, dead.pk)
            gate = rmdir_gate if verb == "rmdir" else zfs_gate
            if verb == "rmdir":
                rmdir_gate.close()
            else:
                zfs_gate.close(verb, clone)
            outcome: dict[str, Any] = {}
            sweeper = threading.Thread(target=_sweep, args=(node, pool, outcome))
            sweeper.start()
            wait_for(gate.waiting, timeout=60, what=f"the sweep to reach {verb}")
            _kill_sessions(tnode)
            sweeper.join(timeout=120)
            gate.open()
            assert not sweeper.is_alive()
            assert isinstance(outcome.get("error"), ConnectorError), outcome

            job = snapshot_pass(client, domain_id)
            assert job.status == Job.SUCCEEDED, f"{verb}: {job.log}\n{job.error}"
            swept = job.result["swept"]
            assert not swept["errors"] and swept["clones"] + swept["folders"] >= 1, swept
            assert clone not in _clones(f, pool), verb
            assert not _exists(f, mount), verb
            assert f"{pool}/ums-restore-{running.pk}" in _clones(f, pool)
            with session(node) as conn:
                assert restore_run.ensure_clone(conn, snap, running.pk) == live_mount
    finally:
        zfs_gate.remove()
        rmdir_gate.remove()


def test_worker_killed_in_a_sweeps_destroy_the_pass_run_again_finishes_it(
    cast: Cast,
    store_fleet: Fleet,  # noqa: F811
    settings,
    tmp_path,
) -> None:
    """The snapshot pass in a real Celery worker, SIGKILLed while its sweep's ``zfs
    destroy`` hangs; restarted, the jobs reconciler runs the pass again and it ends with
    the clone and its folder gone."""
    f, pool = store_fleet, store_fleet.pools[IMAP]
    client = token_client(cast.sub_admin)
    domain_id, snap = snapshotted_domain(client, cast)
    dead = _job(BASE_ID + 30, RESTORE_JOB, Job.FAILED, ended_hours_ago=2)
    with session(f.nodes[IMAP]) as conn:
        mount = restore_run.ensure_clone(conn, snap, dead.pk)
    clone = f"{pool}/ums-restore-{dead.pk}"
    gate = ZfsGate(f.tnodes[IMAP])
    gate.close("destroy", clone)
    settings.UMS_JOB_STALE_SECONDS = WORKER_STALE
    # The worker's settings: this pool, no converges, a dead run noticed within seconds.
    env = {"UMS_NODE_SETTINGS": json.dumps(settings.UMS_CONVERGE), "UMS_AUTO_CONVERGE": "false"}
    env |= {"UMS_JOB_STALE_SECONDS": str(WORKER_STALE), "UMS_RECONCILE_INTERVAL": "1"}
    try:
        with celery_stack(tmp_path, env=env) as (worker, _beat):
            job = snapshot_pass(client, domain_id)
            wait_for(gate.waiting, timeout=90, what="the pass's sweep to reach zfs destroy")
            worker.kill()
            gate.open()
            worker.start()  # as systemd's Restart=always would
            job = wait_for(
                lambda: Job.objects.filter(pk=job.pk, status__in=Job.FINISHED).first(),
                timeout=180,
                what="the snapshot pass to finish after the kill",
            )
        assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}\n{worker.log_tail()}"
        assert job.attempts >= 2, job.log
    finally:
        gate.remove()
    assert clone not in _clones(f, pool)
    assert not _exists(f, mount)
