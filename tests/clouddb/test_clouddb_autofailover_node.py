"""Automatic failover of a zone's cloud database on real MariaDB in namespaced nodes, at
the default intervals (the probe every ``UMS_FAILOVER_PROBE_INTERVAL`` s on the primary's
SSH and MariaDB ports, the replication policy's default delay of 30 s, its
``autoFailover`` switch): a blip (A's namespace stopped, its sshd back before the delay)
fails nothing over; A stopped for good (mariadbd and sshd) is failed over to B by the
probe alone: Nextcloud's dbhost (the occ STAND-IN) points at B, which takes writes.
Waits are hang guards, never timings."""

from __future__ import annotations

import pytest
from django.conf import settings

from audit.models import AuditRecord
from clouddb import reconcile
from clouddb.models import CloudDbCluster, CloudDbMember
from replication import autofailover
from replication.models import PrimaryProbe
from tests.fixtures import Cast, token_client
from tests.replication.beat import beating, wait_for
from ums import jobs
from ums.models import Job

from .nodes import NC_USER, A, B, C, DbFleet, make_nextcloud_db

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


def _failures(node) -> int:
    row = PrimaryProbe.objects.filter(node=node).first()
    return row.failures if row else 0


def test_a_dead_primary_database_fails_over_by_itself_and_a_blip_does_not(
    cast: Cast, db_fleet: DbFleet
) -> None:
    jobs.load_handlers()
    f = db_fleet
    a = f.approve(A)
    f.approve(C)
    assert reconcile.run()["errors"] == []
    make_nextcloud_db(f, A)
    f.sql(A, "INSERT INTO nextcloud.t (v) VALUES ('one')", user=NC_USER)
    f.approve(B)
    assert reconcile.run()["errors"] == []
    f.wait_rows(B, ["one"])
    cluster = CloudDbCluster.objects.get()
    # The same switch as the mail domains': the zone's customer's replication policy.
    response = token_client(cast.sub_admin).post(
        "/api/v1/replication/policies/",
        {"customer": cluster.zone.customer_id, "autoFailover": True},
        format="json",
    )
    assert response.status_code == 201, response.content

    with beating((settings.UMS_FAILOVER_PROBE_INTERVAL, autofailover.run)):
        wait_for(lambda: PrimaryProbe.objects.filter(node=a, failures=0).exists(), "probed")
        f.tnodes[A].stop()  # a blip: back (sshd) before the delay
        wait_for(lambda: _failures(a) >= 1, "a failed probe")
        f.tnodes[A].start()
        wait_for(lambda: _failures(a) == 0, "the count reset by an answered probe")
        assert not Job.objects.filter(kind="clouddb.failover").exists()
        cluster.refresh_from_db()
        assert cluster.primary_id == a.pk

        f.tnodes[A].stop()  # for good: mariadbd and sshd
        wait_for(
            lambda: Job.objects.filter(kind="clouddb.failover", status=Job.SUCCEEDED).exists(),
            "the automatic failover",
        )

    job = Job.objects.get(kind="clouddb.failover")
    cluster.refresh_from_db()
    assert (cluster.primary_id, cluster.epoch) == (f.nodes[B].pk, 1), job.log
    assert CloudDbMember.objects.get(node=a).state == CloudDbMember.FENCED
    audit = AuditRecord.objects.get(action="clouddb.auto_failover")
    assert audit.changes["failed_probes"] >= settings.UMS_FAILOVER_PROBE_FAILURES
    assert f.dbhost() == f.tnodes[B].address
    f.sql(B, "INSERT INTO nextcloud.t (v) VALUES ('after')", user=NC_USER)
    assert f.rows(B) == ["one", "after"]
