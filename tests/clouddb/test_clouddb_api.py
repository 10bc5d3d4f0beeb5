"""The cloud DB API without nodes: the scoping contract, the failover action's errors
(all at once, never a 500), the member rows the reconciler assigns per zone, and the lag
alert over the policy's threshold. The MariaDB work runs on real nodes in
test_clouddb_node.py and test_clouddb_faults.py."""

from __future__ import annotations

import pytest

from clouddb import reconcile
from clouddb.models import CloudDbCluster, CloudDbMember
from replication.models import ReplicationPolicy
from servers import actions as server_actions
from servers.models import Node, NodeAlert
from tests.api.contracts import ScopedEndpointContract
from tests.backup.test_portal import portal
from tests.fixtures import Cast, token_client
from ums import jobs
from ums.models import Job

pytestmark = pytest.mark.django_db


def _node(customer, hostname: str, zone=None, roles=("clouddb",)) -> Node:
    zone = zone or server_actions.create_zone(actor=None, customer=customer, name=f"Z {hostname}")
    return Node.objects.create(
        customer=customer, customer_path=customer.path, zone=zone, hostname=hostname,
        ssh_address="192.0.2.60", status="active", roles=list(roles),
    )  # fmt: skip


def _cluster(customer, hostname: str) -> CloudDbCluster:
    node = _node(customer, hostname)
    return CloudDbCluster.objects.create(
        zone=node.zone, customer_path=node.zone.customer_path, primary=node
    )


class TestCloudDbClusterEndpoint(ScopedEndpointContract):
    basename = "clouddbcluster"
    model = CloudDbCluster
    can_delete = False

    def make_in_scope(self, cast: Cast) -> CloudDbCluster:
        return _cluster(cast.ministry, "db-in.example.org")

    def make_outside(self, cast: Cast) -> CloudDbCluster:
        return _cluster(cast.isp, "db-out.example.org")


def test_members_are_assigned_per_zone_first_node_primary(cast: Cast) -> None:
    first = _node(cast.government, "db1.example.org")
    second = _node(cast.government, "db2.example.org", zone=first.zone)
    other = _node(cast.government, "db3.example.org")
    _node(cast.government, "files.example.org", zone=first.zone, roles=("cloudfiles",))
    clusters = {c.zone_id: c for c in reconcile.assign()}
    assert clusters[first.zone_id].primary_id == first.pk
    assert clusters[other.zone_id].primary_id == other.pk
    states = dict(CloudDbMember.objects.values_list("node__hostname", "state"))
    assert states == {"db1.example.org": "primary", "db2.example.org": "new",
                      "db3.example.org": "primary"}  # fmt: skip
    assert reconcile.assign() and CloudDbMember.objects.count() == 3  # idempotent
    assert second.clouddb_member.cluster == clusters[first.zone_id]


def test_failover_errors_all_at_once(cast: Cast) -> None:
    cluster = _cluster(cast.ministry, "db-f.example.org")
    stranger = _node(cast.ministry, "db-g.example.org")
    client = token_client(cast.sub_admin)
    url = f"/api/v1/clouddb/clusters/{cluster.pk}/failover/"
    response = client.post(url, {"node": stranger.pk, "force": "maybe"}, format="json")
    assert response.status_code == 400, response.content
    assert set(response.json()["errors"]) >= {"force"}
    response = client.post(url, {"node": stranger.pk}, format="json")
    assert response.status_code == 400, response.content
    assert "node" in response.json()["errors"]
    response = client.post(url, {}, format="json")
    assert response.status_code == 400, response.content
    assert "node" in response.json()["errors"]


def test_lag_over_the_policy_raises_an_alert_and_clears_it(cast: Cast) -> None:
    cluster = _cluster(cast.ministry, "db-l.example.org")
    replica = _node(cast.ministry, "db-m.example.org", zone=cluster.zone)
    ReplicationPolicy.objects.create(
        customer=cast.ministry, customer_path=cast.ministry.path, max_lag_minutes=1
    )
    member = CloudDbMember.objects.create(
        cluster=cluster, node=replica, customer_path=replica.customer_path,
        state=CloudDbMember.REPLICA, replicating=True, seconds_behind=61,
    )  # fmt: skip
    assert reconcile.lag_alerts() == [replica.hostname]
    alert = NodeAlert.objects.get(node=replica, kind=reconcile.LAG_ALERT, resolved_at=None)
    assert "61 seconds" in alert.message
    CloudDbMember.objects.filter(pk=member.pk).update(seconds_behind=0)
    assert reconcile.lag_alerts() == []
    assert not NodeAlert.objects.filter(node=replica, kind=reconcile.LAG_ALERT,
                                        resolved_at=None).exists()  # fmt: skip
    # Stopped replication alerts too, with the node's own error.
    CloudDbMember.objects.filter(pk=member.pk).update(replicating=False, last_error="boom")
    assert reconcile.lag_alerts() == [replica.hostname]


def test_portal_page_shows_lag_per_node_and_starts_a_failover(
    cast: Cast, django_assert_max_num_queries, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "_dispatch", lambda job_id: None)  # no node to run it on
    cluster = _cluster(cast.ministry, "db-p.example.org")
    replica = _node(cast.ministry, "db-q.example.org", zone=cluster.zone)
    CloudDbMember.objects.create(
        cluster=cluster, node=replica, customer_path=replica.customer_path,
        state=CloudDbMember.REPLICA, replicating=True, seconds_behind=7,
        transactions_behind=3, gtid_pos="0-1-42",
    )  # fmt: skip
    _cluster(cast.isp, "db-isp.example.org")
    client = portal(cast.sub_admin)
    with django_assert_max_num_queries(20):
        page = client.get("/clouddb/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "db-q.example.org" in text and "0-1-42" in text and "db-isp" not in text
    response = client.post(f"/clouddb/{cluster.pk}/failover/", {"node": "x" * 40})
    job = Job.objects.get(kind=reconcile.FAILOVER_JOB)  # bad node: the best replica
    assert response.status_code == 302 and job.params["node_id"] == replica.pk
    again = client.post(f"/clouddb/{cluster.pk}/failover/", follow=True)
    assert "already running" in again.content.decode()
    assert portal(cast.sibling_admin).post(f"/clouddb/{cluster.pk}/failover/").status_code == 404


def test_a_released_lease_is_not_taken_back_by_a_late_renew(cast: Cast) -> None:
    """A release keeps the token; a renew after it (a progress callback of the holder's
    stream, late) must not make the lease held again for nobody."""
    from clouddb import lease

    cluster = _cluster(cast.government, "leasedb.example.org")
    token = lease.claim(cluster.pk)
    assert token is not None and lease.renew(cluster.pk, token)
    assert lease.claim(cluster.pk) is None  # held
    lease.release(cluster.pk, token)
    assert not lease.renew(cluster.pk, token)
    assert lease.claim(cluster.pk) is not None  # free for the next pass
