"""Automatic failover of a mail domain on real nodes, at the default intervals (the probe
every ``UMS_FAILOVER_PROBE_INTERVAL`` s, the policy's default delay of 30 s): IMAP A is
the primary, B holds a synced replica, the SMTP node relays. A blip (A's namespace stopped
and its sshd back before the delay) fails nothing over; A stopped for good (sshd and every
daemon) is failed over to B by the probe alone, and a message sent through the SMTP node
after the kill reads back over IMAPS on B. Waits are hang guards, never timings (the
failover time is in benchmarks/failover.py)."""

from __future__ import annotations

import secrets

import pytest
from django.conf import settings

from audit.models import AuditRecord
from deploy.models import DomainPlacement
from replication import autofailover
from replication.models import DomainReplica, PrimaryProbe, ReplicationPolicy
from tests.converge.fleet import Fleet
from tests.fixtures import Cast
from ums import jobs
from ums.models import Job

from .beat import beating, wait_for
from .nodes import DOMAIN, A, B, auto_failover_domain, bring_back, imaps_bodies, send

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


def _failures(node) -> int:
    row = PrimaryProbe.objects.filter(node=node).first()
    return row.failures if row else 0


def _readable_on(f: Fleet, index: int, token: str) -> bool:
    try:
        return token.encode() in imaps_bodies(f, index)
    except Exception:  # not serving the domain yet
        return False


def test_a_dead_primary_fails_over_by_itself_and_a_blip_does_not(
    cast: Cast, repl_fleet: Fleet
) -> None:
    jobs.load_handlers()
    f = repl_fleet
    domain, before = auto_failover_domain(f, cast)
    assert ReplicationPolicy.objects.get().failover_delay_seconds == 30  # the default
    a = f.nodes[A]

    with beating((settings.UMS_FAILOVER_PROBE_INTERVAL, autofailover.run)):
        wait_for(lambda: PrimaryProbe.objects.filter(node=a, failures=0).exists(), "probed")
        # A blip: A's namespace stops, one probe fails, its sshd is back before the delay.
        f.tnodes[A].stop()
        wait_for(lambda: _failures(a) >= 1, "a failed probe")
        f.tnodes[A].start()
        wait_for(lambda: _failures(a) == 0, "the count reset by an answered probe")
        assert not Job.objects.filter(kind="replication.failover").exists()
        assert DomainPlacement.objects.get(domain_id=domain["id"]).node_id == a.pk

        # For good: nothing but the probe notices; the mail sent now is deferred.
        f.tnodes[A].stop()
        token = f"during-{secrets.token_hex(4)}"
        send(f, f"alice@{DOMAIN}", token)
        wait_for(lambda: _readable_on(f, B, token), "the new message readable on B")

    placement = DomainPlacement.objects.get(domain_id=domain["id"])
    assert placement.node_id == f.nodes[B].pk
    job = Job.objects.get(kind="replication.failover")
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    audit = AuditRecord.objects.get(action="replication.auto_failover")
    assert audit.changes["failed_probes"] >= settings.UMS_FAILOVER_PROBE_FAILURES
    assert before.encode() in imaps_bodies(f, B)  # synced before the kill: not lost
    fenced = DomainReplica.objects.get(domain_id=domain["id"], node=a)
    assert fenced.state == DomainReplica.FENCED
    bring_back(f, A)  # its pool back for the fleet's teardown
