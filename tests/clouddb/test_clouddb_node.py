"""Cloud DB replication on real parts: MariaDB on two namespaced cloud DB nodes, driven by
the product over SSH, and a cloud files node whose Nextcloud (the occ STAND-IN) follows
the primary.

A is approved and becomes the zone's primary (Nextcloud's dbhost points at it); B is
approved and the reconciler seeds it (mariadb-dump --gtid --master-data) and starts GTID
replication: rows written on A appear on B, the lag is shown per node in the API. A is
killed (its mariadbd and sshd, the whole namespace), the failover job promotes B and
re-points dbhost; writes go to B. A comes back: the reconciler fences it (read-only,
Nextcloud's account cannot write there, its data dumped aside) and re-seeds it as a
replica of B.
"""

from __future__ import annotations

import pytest

from audit.models import AuditRecord
from clouddb import mariadb, reconcile
from clouddb.models import CloudDbCluster, CloudDbMember
from tests.fixtures import Cast, token_client
from ums.models import Job

from .nodes import NC_USER, A, B, C, DbFleet, make_nextcloud_db

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


def _pass() -> dict:
    return reconcile.run()


def test_replica_follows_fails_over_and_the_old_primary_is_fenced_and_reseeded(
    cast: Cast, db_fleet: DbFleet
) -> None:
    f = db_fleet
    f.approve(A)
    f.approve(C)
    summary = _pass()
    assert summary["errors"] == [], summary
    cluster = CloudDbCluster.objects.get()
    assert cluster.primary_id == f.nodes[A].pk and cluster.repl_password
    # Encrypted at rest: the column holds a Fernet token, not the password.
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT repl_password FROM clouddb_clouddbcluster")
        assert cur.fetchone()[0] != cluster.repl_password
    assert f.dbhost() == f.tnodes[A].address
    make_nextcloud_db(f, A)
    f.sql(A, "INSERT INTO nextcloud.t (v) VALUES ('one'), ('two')", user=NC_USER)

    f.approve(B)
    summary = _pass()
    assert summary["errors"] == [], summary
    member_b = CloudDbMember.objects.get(node=f.nodes[B])
    print(f"cloud DB seed: {member_b.seed_bytes} bytes")
    assert member_b.state == CloudDbMember.REPLICA and member_b.replicating, member_b.last_error
    assert member_b.seed_bytes > 0
    f.wait_rows(B, ["one", "two"])
    f.sql(A, "INSERT INTO nextcloud.t (v) VALUES ('three')", user=NC_USER)
    f.wait_rows(B, ["one", "two", "three"])  # streamed, no pass needed
    assert _pass()["errors"] == []
    client = token_client(cast.sub_admin)
    body = client.get("/api/v1/clouddb/clusters/").json()
    (item,) = body.get("results", body)
    by_host = {m["nodeHostname"]: m for m in item["members"]}
    replica = by_host[f.nodes[B].hostname]
    assert replica["state"] == "replica" and replica["replicating"] is True
    assert replica["secondsBehind"] == 0 and replica["transactionsBehind"] == 0
    assert replica["gtidPos"] == by_host[f.nodes[A].hostname]["gtidPos"]
    assert item["maxLagSeconds"] == 30 * 60
    # A live primary is not failed over (the job refuses; force is for operators).
    response = client.post(f"/api/v1/clouddb/clusters/{cluster.pk}/failover/", {}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.FAILED and "answers" in job.error

    f.tnodes[A].stop()  # mariadbd, sshd: everything in A's namespace
    response = client.post(f"/api/v1/clouddb/clusters/{cluster.pk}/failover/", {}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    print(f"cloud DB failover job: {(job.finished_at - job.created_at).total_seconds():.2f} s")
    cluster.refresh_from_db()
    assert (cluster.primary_id, cluster.epoch) == (f.nodes[B].pk, 1)
    assert f.dbhost() == f.tnodes[B].address
    f.sql(B, "INSERT INTO nextcloud.t (v) VALUES ('after')", user=NC_USER)
    assert f.rows(B) == ["one", "two", "three", "after"]
    assert AuditRecord.objects.filter(action="clouddb.failover").count() == 1
    assert CloudDbMember.objects.get(node=f.nodes[A]).state == CloudDbMember.FENCED

    f.tnodes[A].start()  # sshd only: the product starts A's mariadbd, read-only
    summary = _pass()
    assert summary["errors"] == [], summary
    member_a = CloudDbMember.objects.get(node=f.nodes[A])
    assert member_a.state == CloudDbMember.REPLICA and member_a.replicating, member_a.last_error
    assert member_a.read_only is True and member_a.aside.endswith("/e1.sql")
    assert f.tnodes[A].path(member_a.aside).stat().st_size > 0
    f.wait_rows(A, ["one", "two", "three", "after"])
    refused = f.sql(A, "INSERT INTO nextcloud.t (v) VALUES ('stale')", user=NC_USER, check=False)
    assert refused.returncode != 0 and "read-only" in refused.stderr
    status = f.sql(A, "SHOW SLAVE STATUS\\G").stdout.split()  # values only
    assert f.tnodes[B].address in status and "Slave_Pos" in status
    f.sql(B, "INSERT INTO nextcloud.t (v) VALUES ('last')", user=NC_USER)
    f.wait_rows(A, ["one", "two", "three", "after", "last"])
    assert f.dbhost() == f.tnodes[B].address
    assert mariadb.behind("0-2-9", "0-1-7") == 2
