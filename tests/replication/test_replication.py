"""Replication without nodes: the API contracts (scope, audit, every error at once), the
policy's choice of replica nodes, lag alerts, automatic failover after the policy's delay,
the ZFS plan that keeps replicas read-only and promotes a placed one, and the portal
pages. The streams, the failover and the fencing run on real nodes in
test_replication_node.py."""

from __future__ import annotations

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditRecord
from deploy.models import DomainPlacement
from deploy.services.zfs import MailStoreFacts, ZfsService
from mail.models import Domain
from replication import policy, tasks
from replication.models import DomainReplica, ReplicationPolicy
from servers import actions as server_actions
from servers.models import Node, NodeAlert, ZoneLatency
from tests.api.contracts import ScopedEndpointContract
from tests.backup.test_portal import portal
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain
from tests.services.zfs.test_zfs import GiB, _domain, _state
from ums import jobs
from ums.models import Job

pytestmark = pytest.mark.django_db


def _node(customer, hostname: str, zone=None, status: str = "active") -> Node:
    zone = zone or server_actions.create_zone(actor=None, customer=customer, name=f"Z {hostname}")
    return Node.objects.create(
        customer=customer,
        customer_path=customer.path,
        zone=zone,
        hostname=hostname,
        ssh_address="192.0.2.50",
        status=status,
        roles=["imap"],
    )


def _placed(customer, name: str, node: Node):
    domain = make_domain(customer, name)
    DomainPlacement.objects.update_or_create(domain=domain, defaults={"node": node})
    return domain


@pytest.fixture
def zfs_store(settings):
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "mail_store_pool": "tank"}


@pytest.fixture
def no_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    # Jobs are recorded, not run: these tests have no nodes to run them against.
    monkeypatch.setattr(jobs, "_dispatch", lambda job_id: None)


class TestReplicationPolicyEndpoint(ScopedEndpointContract):
    basename = "replicationpolicy"
    model = ReplicationPolicy
    audit_prefix = "replication_policy."

    def make_in_scope(self, cast: Cast) -> ReplicationPolicy:
        return ReplicationPolicy.objects.create(
            customer=cast.government, customer_path=cast.government.path
        )

    def make_outside(self, cast: Cast) -> ReplicationPolicy:
        return ReplicationPolicy.objects.create(customer=cast.isp, customer_path=cast.isp.path)

    def create_payload(self, cast: Cast) -> dict:
        return {"customer": cast.ministry.pk, "replicas": 2, "zoneRule": "other"}

    def update_payload(self, cast: Cast, obj: ReplicationPolicy) -> dict:
        return {"maxLagMinutes": 10, "autoFailover": True}


class TestReplicatedDomainEndpoint(ScopedEndpointContract):
    basename = "replicateddomain"
    model = Domain
    can_delete = False

    def make_in_scope(self, cast: Cast):
        return make_domain(cast.ministry, "inside.example")

    def make_outside(self, cast: Cast):
        return make_domain(cast.isp, "outside.example")


def test_policy_errors_all_at_once(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    response = client.post(
        "/api/v1/replication/policies/",
        {"customer": cast.ministry.pk, "replicas": 9, "zoneRule": "moon", "syncIntervalMinutes": 0},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert set(response.json()["errors"]) >= {"replicas", "zoneRule", "syncIntervalMinutes"}


def test_replicas_follow_the_policy_zone_rule(cast: Cast, zfs_store: None) -> None:
    primary = _node(cast.government, "imap1.example.org")
    same = _node(cast.government, "imap2.example.org", zone=primary.zone)
    other = _node(cast.government, "imap3.example.org")
    _node(cast.isp, "imap-isp.example.org")  # another tree: never a replica
    domain = _placed(cast.ministry, "rep.example", primary)
    ReplicationPolicy.objects.create(
        customer=cast.government, customer_path=cast.government.path, zone_rule="other"
    )
    assert policy.assign() == [("rep.example", other.hostname)]
    assert policy.assign() == []  # level-triggered: nothing more to do
    ReplicationPolicy.objects.filter(customer=cast.government).update(zone_rule="same", replicas=2)
    assert policy.assign() == [("rep.example", same.hostname)]
    assert set(DomainReplica.objects.filter(domain=domain).values_list("node_id", flat=True)) == {
        same.pk,
        other.pk,
    }
    assert AuditRecord.objects.filter(action="replica.assigned").count() == 2


def test_no_replicas_without_a_zfs_mail_store(cast: Cast) -> None:
    primary = _node(cast.government, "imap1.example.org")
    _node(cast.government, "imap2.example.org")
    _placed(cast.ministry, "rep.example", primary)
    assert policy.assign() == []


def test_lag_alert_raised_then_resolved(cast: Cast, zfs_store: None) -> None:
    primary = _node(cast.government, "imap1.example.org", status="offline")
    replica_node = _node(cast.government, "imap2.example.org")
    domain = _placed(cast.ministry, "lag.example", primary)
    now = timezone.now()
    replica = DomainReplica.objects.create(
        domain=domain,
        node=replica_node,
        customer_path=domain.customer_path,
        state=DomainReplica.SYNCED,
        synced_at=now - datetime.timedelta(minutes=45),
    )
    result = tasks.schedule(now)
    assert result["alerts"] == [f"lag.example@{replica_node.hostname}"]
    alert = NodeAlert.objects.get(node=replica_node, kind=tasks.LAG_ALERT, resolved_at=None)
    assert "lag.example" in alert.message
    row = token_client(cast.sub_admin).get(f"/api/v1/replication/domains/{domain.pk}/").json()
    assert row["replicas"][0]["overPolicy"] is True
    assert row["replicas"][0]["lagSeconds"] >= 45 * 60
    assert tasks.schedule(now)["alerts"] == []  # raised once
    DomainReplica.objects.filter(pk=replica.pk).update(synced_at=now)
    tasks.schedule(now)
    alert.refresh_from_db()
    assert alert.resolved_at is not None


def test_automatic_failover_only_when_allowed_and_after_the_delay(
    cast: Cast, zfs_store: None, no_dispatch: None
) -> None:
    primary = _node(cast.government, "imap1.example.org", status="offline")
    replica_node = _node(cast.government, "imap2.example.org")
    domain = _placed(cast.ministry, "auto.example", primary)
    now = timezone.now()
    DomainReplica.objects.create(
        domain=domain,
        node=replica_node,
        customer_path=domain.customer_path,
        state=DomainReplica.SYNCED,
        synced_at=now,
    )
    Node.objects.filter(pk=primary.pk).update(last_seen_at=now - datetime.timedelta(minutes=3))
    assert tasks.schedule(now)["failovers"] == []  # not allowed by default
    ReplicationPolicy.objects.create(
        customer=cast.government,
        customer_path=cast.government.path,
        auto_failover=True,
        failover_delay_seconds=300,
    )
    assert tasks.schedule(now)["failovers"] == []  # offline for 3 minutes only
    later = now + datetime.timedelta(minutes=3)
    assert tasks.schedule(later)["failovers"] == ["auto.example"]
    job = Job.objects.get(kind="replication.failover")
    assert job.params["node_id"] == replica_node.pk and job.params["from_node_id"] == primary.pk
    assert AuditRecord.objects.filter(action="replication.auto_failover").exists()
    assert tasks.schedule(later)["failovers"] == []  # one at a time


def test_failover_and_failback_refused_with_field_errors(cast: Cast, no_dispatch: None) -> None:
    primary = _node(cast.government, "imap1.example.org")
    stranger = _node(cast.government, "imap2.example.org")
    domain = _placed(cast.ministry, "none.example", primary)
    client = token_client(cast.sub_admin)
    response = client.post(f"/api/v1/replication/domains/{domain.pk}/failover/")
    assert response.status_code == 400, response.content
    assert set(response.json()["errors"]) == {"node"}
    response = client.post(
        f"/api/v1/replication/domains/{domain.pk}/failback/", {"node": stranger.pk}, format="json"
    )
    assert response.status_code == 400 and set(response.json()["errors"]) == {"node"}
    response = client.post(f"/api/v1/replication/domains/{domain.pk}/sync-now/")
    assert response.status_code == 400 and set(response.json()["errors"]) == {"domain"}
    outsider = token_client(cast.sibling_admin)
    assert outsider.post(f"/api/v1/replication/domains/{domain.pk}/failover/").status_code == 404
    viewer = token_client(cast.ministry_viewer)
    assert viewer.post(f"/api/v1/replication/domains/{domain.pk}/failover/").status_code == 403
    assert not Job.objects.exists()


def test_manual_failover_picks_the_freshest_replica_and_audits(
    cast: Cast, no_dispatch: None
) -> None:
    primary = _node(cast.government, "imap1.example.org")
    old = _node(cast.government, "imap2.example.org")
    fresh = _node(cast.government, "imap3.example.org")
    domain = _placed(cast.ministry, "pick.example", primary)
    now = timezone.now()
    for node, age in ((old, 20), (fresh, 2)):
        DomainReplica.objects.create(
            domain=domain,
            node=node,
            customer_path=domain.customer_path,
            state=DomainReplica.SYNCED,
            synced_at=now - datetime.timedelta(minutes=age),
        )
    response = token_client(cast.sub_admin).post(
        f"/api/v1/replication/domains/{domain.pk}/failover/"
    )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.params == {
        "domain_id": domain.pk,
        "node_id": fresh.pk,
        "from_node_id": primary.pk,
        "epoch": 0,
    }
    assert AuditRecord.objects.filter(action="replication.failover_request").count() == 1
    # A second click while it runs is refused, not queued twice.
    response = token_client(cast.sub_admin).post(
        f"/api/v1/replication/domains/{domain.pk}/failover/"
    )
    assert response.status_code == 400


def test_zfs_plan_keeps_replicas_read_only_and_promotes_a_placed_one() -> None:
    parent = "tank/mail"
    facts = MailStoreFacts(
        True,
        {
            parent: {"type": "filesystem"},
            f"{parent}/held.example": {
                "type": "filesystem",
                "compression": "on",
                "dedup": "off",
                "quota": str(100 * 1024 * 1024),
                "mountpoint": "none",
                "mounted": "no",
                "readonly": "on",
            },
            f"{parent}/copy.example": {
                "type": "filesystem",
                "mountpoint": "/var/mail/vhosts/copy.example",
                "mounted": "yes",
                "readonly": "off",
            },
        },
        GiB,
    )
    state = _state(
        "tank",
        _domain("held.example"),
        mail_root="/var/mail/vhosts",
        replica_domains=["copy.example", "missing.example"],
    )
    plan = ZfsService().plan_from_facts(facts, state)
    assert plan == [
        ["zfs", "set", "readonly=off", f"{parent}/held.example"],
        ["zfs", "set", "mountpoint=/var/mail/vhosts/held.example", f"{parent}/held.example"],
        ["zfs", "set", "readonly=on", f"{parent}/copy.example"],
        # First (its holders stopped): a session open on the demoted primary holds it busy.
        ["zfs", "unmount", f"{parent}/copy.example"],
        ["zfs", "set", "mountpoint=none", f"{parent}/copy.example"],
    ]


def test_portal_pages(cast: Cast, no_dispatch: None) -> None:
    primary = _node(cast.government, "imap1.example.org")
    replica_node = _node(cast.government, "imap2.example.org")
    domain = _placed(cast.ministry, "page.example", primary)
    DomainReplica.objects.create(
        domain=domain,
        node=replica_node,
        customer_path=domain.customer_path,
        state=DomainReplica.SYNCED,
        synced_at=timezone.now(),
        last_snapshot="ums-sync-20261207T120000Z",
    )
    client = portal(cast.sub_admin)
    page = client.get("/replication/").content.decode()
    assert "page.example" in page and replica_node.hostname in page
    page = client.get(f"/replication/domains/{domain.pk}/").content.decode()
    assert (
        "ums-sync-20261207T120000Z" in page
        and reverse("replication:failover", args=[domain.pk]) in page
    )
    head = client.get(reverse("mail:domain-detail", args=[domain.pk])).content.decode()
    assert reverse("replication:domain", args=[domain.pk]) in head
    assert portal(cast.sibling_admin).get(f"/replication/domains/{domain.pk}/").status_code == 404
    # The buttons start audited jobs and show them (their progress bar).
    response = client.post(reverse("replication:failover", args=[domain.pk]))
    job = Job.objects.get(kind="replication.failover")
    assert response.status_code == 302 and response["Location"].endswith(f"/jobs/{job.pk}/")
    assert job.params["node_id"] == replica_node.pk
    response = client.post(reverse("replication:failback", args=[domain.pk]), {"node": "x"})
    assert response.status_code == 302  # refused (a failover runs): back to the page
    assert Job.objects.count() == 1
    assert (
        portal(cast.sibling_admin).post(reverse("replication:sync", args=[domain.pk])).status_code
        == 404
    )


def test_zone_modes_mx_suggestion_and_latency_warning(cast: Cast, zfs_store: None) -> None:
    primary = _node(cast.government, "imap1.example.org")
    warm = _node(cast.government, "imap2.example.org")  # another zone
    _node(cast.government, "imap3.example.org", zone=primary.zone)
    smtp_here = _node(cast.government, "mx1.example.org", zone=primary.zone)
    smtp_there = _node(cast.government, "mx2.example.org", zone=warm.zone)
    Node.objects.filter(pk__in=[smtp_here.pk, smtp_there.pk]).update(roles=["smtp"])
    domain = _placed(cast.ministry, "zones.example", primary)
    # HOT-WARM: the warm replica goes to the other zone even with the "any" rule.
    primary.zone.redundancy = "hot-warm"
    primary.zone.save()
    assert policy.assign() == [("zones.example", warm.hostname)]
    ZoneLatency.objects.create(
        from_zone=primary.zone, to_zone=warm.zone, customer_path="/", rtt_ms=120.0
    )
    client = token_client(cast.sub_admin)
    zones = client.get(f"/api/v1/replication/domains/{domain.pk}/").json()["zones"]
    assert zones["mode"] == "hot-warm"
    assert {m["host"]: m["priority"] for m in zones["mx"]} == {
        "mx1.example.org": 10,
        "mx2.example.org": 20,
    }
    assert len(zones["warnings"]) == 1 and "120 ms" in zones["warnings"][0]
    page = portal(cast.sub_admin).get(f"/replication/domains/{domain.pk}/").content.decode()
    assert "120 ms" in page and "mx2.example.org" in page
    # HOT-HOT: every zone's SMTP nodes with equal priority.
    primary.zone.redundancy = "hot-hot"
    primary.zone.save()
    zones = client.get(f"/api/v1/replication/domains/{domain.pk}/").json()["zones"]
    assert {m["priority"] for m in zones["mx"]} == {10}
    assert client.get("/api/v1/replication/domains/").json()["results"][0]["zones"] is None


def test_policy_form_inherits_down_the_tree_with_field_errors_and_audit(cast: Cast) -> None:
    client = portal(cast.sub_admin)
    url = reverse("replication:policy", args=[cast.ministry.pk])
    assert (
        reverse("replication:policy", args=[cast.sub_admin.customer_id])
        in client.get("/replication/").content.decode()
    )
    page = client.get(url).content.decode()
    assert "built-in defaults" in page and 'id="id_inherit" checked' in page
    values = {
        "replicas": "2",
        "zone_rule": "other",
        "sync_interval_minutes": "2",
        "max_lag_minutes": "15",
        "auto_failover": "on",
        "failover_delay_seconds": "20",
    }
    # Field errors, nothing saved.
    response = client.post(url, {**values, "replicas": "9", "sync_interval_minutes": ""})
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert set(errors) == {"replicas", "sync_interval_minutes"}, errors
    assert not ReplicationPolicy.objects.exists()
    # The government's policy reaches the ministry (inherited) ...
    response = client.post(reverse("replication:policy", args=[cast.government.pk]), values)
    assert response.status_code == 302
    assert policy.effective(cast.ministry.path).failover_delay_seconds == 20
    page = client.get(url).content.decode()
    assert f"Inherited from {cast.government.name}" in page
    # ... until the ministry has its own, and again once it inherits.
    response = client.post(url, {**values, "replicas": "1", "auto_failover": ""})
    assert response.status_code == 302
    own = policy.effective(cast.ministry.path)
    assert (own.replicas, own.auto_failover) == (1, False)
    api = token_client(cast.sub_admin).get(
        "/api/v1/replication/policies/", {"customer": cast.ministry.pk}
    )
    assert api.json()["results"][0]["failoverDelaySeconds"] == 20
    response = client.post(url, {"inherit": "on"})
    assert response.status_code == 302
    assert policy.effective(cast.ministry.path).replicas == 2
    actions = list(
        AuditRecord.objects.filter(action__startswith="replication_policy.").values_list(
            "action", flat=True
        )
    )
    assert actions.count("replication_policy.update") == 2
    assert actions.count("replication_policy.delete") == 1
    assert portal(cast.sibling_admin).get(url).status_code == 404
    assert portal(cast.ministry_viewer).get(url).status_code == 403


def test_one_click_failover_in_hot_warm_goes_to_the_warm_zone(
    cast: Cast, no_dispatch: None
) -> None:
    primary = _node(cast.government, "imap1.example.org")
    same = _node(cast.government, "imap2.example.org", zone=primary.zone)
    warm = _node(cast.government, "imap3.example.org")
    domain = _placed(cast.ministry, "warm.example", primary)
    now = timezone.now()
    for node, age in ((same, 1), (warm, 4)):
        DomainReplica.objects.create(
            domain=domain,
            node=node,
            customer_path=domain.customer_path,
            state=DomainReplica.SYNCED,
            synced_at=now - datetime.timedelta(minutes=age),
        )
    client = token_client(cast.sub_admin)
    primary.zone.redundancy = "hot-hot"
    primary.zone.save()
    job = client.post(f"/api/v1/replication/domains/{domain.pk}/failover/").json()
    assert Job.objects.get(pk=job["id"]).params["node_id"] == same.pk  # the freshest
    Job.objects.all().delete()
    primary.zone.redundancy = "hot-warm"
    primary.zone.save()
    job = client.post(f"/api/v1/replication/domains/{domain.pk}/failover/").json()
    assert Job.objects.get(pk=job["id"]).params["node_id"] == warm.pk  # the warm zone
