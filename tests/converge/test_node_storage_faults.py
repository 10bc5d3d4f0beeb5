"""Storage stop and start survive a worker SIGKILLed at each step, on real parts.

A real Celery worker and beat (tests/harness/worker.py) run the storage jobs of a real
IMAP node whose mail store is a zfs-fuse pool (tests/converge/test_mail_store.py). A
command on the node hangs at the chosen step (a gate in the node's ``/usr/local/sbin``,
first in root's PATH over SSH), the whole worker is SIGKILLed there, the gate opens (the
node finishes whatever command was under way, as a node does when its controller dies)
and the worker starts again, as systemd's ``Restart=always`` would. Then the test only
waits: no manual job, no key deleted by hand. The steps, in the order a node meets them:

1. stop, after the mail store's services stopped (Postfix down, the SMTP node defers),
   before any unmount;
2. start, mid-mount: the mail store dataset mounted, the domain's dataset not yet;
3. stop, mid-unmount: the domain's dataset unmounted, its parent not yet;
4. start, after every mount, before the services start (Courier's authdaemond gated).

After each heal the node's state is what the job's final state says and what the API
shows (requested = applied, no error); mail sent while the storage is stopped is deferred
by the SMTP node (never bounced) and delivered once after the start: nothing lost, nothing
doubled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from deploy.storage_reconcile import KINDS
from servers.models import Node
from tests.faults.nodes import Gate, ZfsGate
from tests.fixtures import Cast, token_client
from tests.harness.worker import CeleryWorker, celery_stack, wait_for, zfs_fault_env
from ums import jobs
from ums.models import Job

from .fleet import Fleet
from .test_mail_store import (  # noqa: F401 (store_fleet is a fixture)
    IMAP,
    PASSWORD,
    SMTP,
    _send,
    _wait_in_node,
    _zfs_get,
    store_fleet,
)
from .test_node_actions import refused
from .test_node_storage import DOMAIN, deferred_in_log, imap_subjects

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

STALE = 6
#: Seconds the system gets to heal after a kill (a worker restart takes a few seconds on
#: a busy machine, the dead run is noticed after STALE).
HEAL_BOUND = 150
MAILDIR = f"/var/mail/vhosts/{DOMAIN}/alice/Maildir"


def storage_jobs(node: Node) -> list[Job]:
    return list(Job.objects.filter(kind__in=KINDS, object_id=str(node.pk)).order_by("pk"))


def settled(node: Node, wanted: str) -> bool:
    """The storage request holds (requested = applied, no error) and no storage job is
    queued or running."""
    node.refresh_from_db()
    active = Job.objects.filter(
        kind__in=KINDS, object_id=str(node.pk), status__in=(Job.PENDING, Job.RUNNING)
    ).exists()
    return (
        not active
        and node.storage_requested == wanted
        and node.storage_applied == wanted
        and not node.storage_error
    )


def assert_outcome_true(client, node: Node, killed: Job, wanted: str) -> None:
    """The killed job resumed to success, or failed with a sentence and a later storage
    job succeeded; the API shows the state the node is in."""
    killed.refresh_from_db()
    assert killed.status in Job.FINISHED, killed.status
    if killed.status == Job.FAILED:
        assert killed.error and "Traceback" not in killed.error, killed.error
        later = [j for j in storage_jobs(node) if j.pk > killed.pk]
        assert any(j.status == Job.SUCCEEDED for j in later), [
            (j.pk, j.status, j.error) for j in later
        ]
    else:
        assert killed.attempts >= 2, killed.log  # resumed by the restarted worker
        assert killed.result["storage"] == wanted
    for job in storage_jobs(node):
        assert job.status in Job.FINISHED and "Traceback" not in job.error, (job.pk, job.error)
    shown = client.get(reverse("node-detail", args=[node.pk])).json()
    assert (shown["storageRequested"], shown["storageApplied"], shown["storageError"]) == (
        wanted,
        wanted,
        "",
    ), shown


def kill_at_gate(
    worker: CeleryWorker,
    gate: ZfsGate | Gate,
    at_gate: Callable[[], bool],
    client: Any,
    node: Node,
    name: str,
) -> Job:
    """Start the storage action through the API, SIGKILL the worker once the job hangs at
    the (closed) gate and the node is in the step's state, open the gate, restart the
    worker; the killed job.

    The job hanging there may be the storage reconciler's retry: the requested one fails
    at once, saying so, while a converge queued by the previous start holds the node's
    lease (as test_node_storage.py notes)."""
    response = client.post(
        reverse("node-node-action", args=[node.pk]), {"action": name}, format="json"
    )
    assert response.status_code == 202, response.content
    requested = response.json()["id"]
    wait_for(gate.waiting, timeout=90, what=f"{name} to reach the gate")
    job = (
        Job.objects.filter(kind__in=KINDS, object_id=str(node.pk), pk__gte=requested)
        .filter(status=Job.RUNNING)
        .order_by("pk")
        .last()
    )
    assert job is not None, [(j.pk, j.status, j.error) for j in storage_jobs(node)]
    assert at_gate(), f"{name}: the node is not at the step the gate marks"
    worker.kill()
    gate.open()
    worker.start()
    return job


def assert_stopped(f: Fleet, dataset: str) -> None:
    assert _zfs_get(f, dataset)["mounted"] == "no"
    assert refused(f.tnodes[IMAP].address, 993) and refused(f.tnodes[IMAP].address, 25)


def maildir_count(f: Fleet, token: str) -> int:
    found = f.in_node(IMAP, ["grep", "-rl", "--", token, MAILDIR], check=False)
    return len(found.stdout.split())


def test_worker_killed_at_each_storage_step_heals_to_the_requested_state(
    cast: Cast,
    store_fleet: Fleet,  # noqa: F811
    settings,
    tmp_path: Path,
) -> None:
    jobs.load_handlers()
    f, pool = store_fleet, store_fleet.pools[IMAP]
    node = f.nodes[IMAP]
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
    alice = f"alice@{DOMAIN}"
    parent, dataset = f"{pool}/mail", f"{pool}/mail/{DOMAIN}"
    # Both are mounted file systems: the mid-mount and mid-unmount steps exist.
    assert _zfs_get(f, parent)["mounted"] == "yes" and _zfs_get(f, dataset)["mounted"] == "yes"
    _send(f, alice, "token-before")
    _wait_in_node(f, f"{MAILDIR}/new", "token-before")

    env = zfs_fault_env(settings, STALE, UMS_STORAGE_RETRY_SECONDS="2")
    # Looked up before the gates shadow it in /usr/local/sbin.
    authdaemond = f.in_node(IMAP, ["sh", "-c", "command -v authdaemond"]).stdout.strip()
    zfs_gate = ZfsGate(f.tnodes[IMAP])
    courier_gate = Gate(f.tnodes[IMAP], "authdaemond", real=authdaemond)
    mounted = lambda name: _zfs_get(f, name)["mounted"]  # noqa: E731
    port_25_refused = lambda: refused(f.tnodes[IMAP].address, 25)  # noqa: E731
    # (action, gate, where it hangs, what holds on the node at that moment)
    steps = [
        ("storage_stop", zfs_gate, ("unmount", dataset), port_25_refused),
        ("storage_start", zfs_gate, ("mount", dataset), lambda: mounted(parent) == "yes"),
        ("storage_stop", zfs_gate, ("unmount", parent), lambda: mounted(dataset) == "no"),
        ("storage_start", courier_gate, (), lambda: mounted(dataset) == "yes"),
    ]
    try:
        with celery_stack(tmp_path, env=env) as (worker, _beat):
            for number, (name, gate, where, at_gate) in enumerate(steps, 1):
                gate.close(*where)
                killed = kill_at_gate(worker, gate, at_gate, client, node, name)
                wanted = "stopped" if name == "storage_stop" else "running"
                wait_for(
                    lambda wanted=wanted: settled(node, wanted),
                    timeout=HEAL_BOUND,
                    what=f"{name} healed",
                )
                assert_outcome_true(client, node, killed, wanted)
                if wanted == "stopped":
                    assert_stopped(f, dataset)
                    # Deferred by the SMTP node, never bounced.
                    _send(f, alice, f"token-during-{number}")
                    lines = deferred_in_log(f, alice)
                    assert "status=bounced" not in lines, lines
                else:
                    assert mounted(dataset) == "yes"
                    f.in_node(SMTP, ["postqueue", "-f"])  # no 5-minute wait for the retry
                    _wait_in_node(f, f"{MAILDIR}/new", f"token-during-{number - 1}")
    finally:
        zfs_gate.remove()
        courier_gate.remove()

    subjects = imap_subjects(f, "alice")
    for token in ("token-before", "token-during-1", "token-during-3"):
        assert token in subjects, subjects
        assert maildir_count(f, token) == 1, token  # delivered once: nothing doubled
    log = f.tnodes[SMTP].path("/var/spool/postfix/maillog").read_text(errors="replace")
    assert "status=bounced" not in log
