"""Crash safety of failover on real parts: a real Celery worker runs the failover of a
domain whose primary (IMAP node A, its sshd and daemons) is down, and is SIGKILLed right
after the commit point (the placement moved, the epoch bumped). The reconciler hands the
job to the restarted worker, which finds the switch made and finishes the rest: one epoch
bump only, the replica writable and mounted on B, the old primary fenced, and the mail
deferred meanwhile delivered on B."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.db import transaction
from django.urls import reverse

from deploy.models import DomainPlacement
from mail.models import Domain
from replication import actions, policy, sync
from replication.models import DomainEpoch, DomainReplica
from tests.converge.fleet import Fleet
from tests.converge.test_mail_store import PASSWORD
from tests.fixtures import Cast, token_client
from tests.harness.worker import celery_stack, wait_for
from ums.models import Job

from .nodes import DOMAIN, A, B, imaps_bodies, send, wait_delivered, wait_mailbox, zprops

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
STALE = 6


def test_worker_killed_after_the_switch_then_the_failover_completes_once(
    cast: Cast, repl_fleet: Fleet, tmp_path: Path, settings
) -> None:
    f = repl_fleet
    settings.UMS_JOB_STALE_SECONDS = STALE
    dataset = f"{f.pools[A]}/mail/{DOMAIN}"
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("mail-domain-list"), {"name": DOMAIN, "customer": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    domain = Domain.objects.get(pk=response.json()["id"])
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": domain.pk, "localPart": "alice", "password": PASSWORD, "quotaMb": 40},
        format="json",
    )
    assert response.status_code == 201, response.content
    wait_mailbox(f, A)
    send(f, f"alice@{DOMAIN}", "fault-before")
    wait_delivered(f, A, "fault-before")
    assert policy.assign() == [(DOMAIN, f.nodes[B].hostname)]
    assert not sync.sync_domain(domain, lambda *a, **k: None)["errors"]

    f.tnodes[A].stop()
    send(f, f"alice@{DOMAIN}", "fault-during")  # deferred by the SMTP node
    env = {
        "UMS_CELERY_IMPORTS": "tests.backup.fault_worker_setup",
        "UMS_NODE_SETTINGS": json.dumps(settings.UMS_CONVERGE),
        "UMS_JOB_STALE_SECONDS": str(STALE),
        "UMS_RECONCILE_INTERVAL": "1",
    }
    celery_dir = tmp_path / "celery"
    celery_dir.mkdir()
    with celery_stack(celery_dir, env=env) as (worker, _beat):
        with transaction.atomic():
            job = actions.start_failover(actor=None, domain=domain)

        def switched() -> bool:
            row = DomainEpoch.objects.filter(domain=domain).first()
            return row is not None and row.epoch == 1

        wait_for(switched, timeout=90, interval=0.05, what="the failover's commit point")
        worker.kill()
        job.refresh_from_db()
        assert job.status != Job.SUCCEEDED
        # Consistent already: the placement, the epoch and the fenced row moved together.
        assert DomainPlacement.objects.get(domain=domain).node_id == f.nodes[B].pk
        assert DomainReplica.objects.get(domain=domain, node=f.nodes[A]).state == "fenced"
        worker.restart()

        def finished() -> bool:
            job.refresh_from_db()
            return job.status in (Job.SUCCEEDED, Job.FAILED)

        wait_for(finished, timeout=240, what="the failover to finish after the restart")
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert job.attempts >= 2
    assert DomainEpoch.objects.get(domain=domain).epoch == 1  # switched once
    assert job.result["epoch"] == 1
    assert zprops(f, B, dataset) == {"readonly": "off", "mounted": "yes"}
    wait_delivered(f, B, "fault-during")
    bodies = imaps_bodies(f, B)
    assert b"fault-before" in bodies and b"fault-during" in bodies
