"""Capacity per zone: users placed there against the sizing guideline ×3, the capacity the
operator declares for the nodes and the load measured by the metric sweep (issue 17 item 5).

The collection of the counters from real nodes is proved in test_nodes.py; here the rules,
the queries that feed them, the API and the dashboard.
"""

from __future__ import annotations

import datetime

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditRecord
from deploy import capacity, metrics
from deploy.models import DomainPlacement
from mail import actions as mail_actions
from servers import actions as server_actions
from servers.choices import NodeStatus
from servers.models import MetricSample, Node, Zone
from tests.fixtures import PASSWORD, Cast, token_client

pytestmark = pytest.mark.django_db

DISKSTATS = """\
 252       0 vda 1000 0 0 0 500 0 0 0 0 0 0
 252       1 vda1 900 0 0 0 450 0 0 0 0 0 0
   7       0 loop0 77 0 0 0 0 0 0 0 0 0 0
 253       0 dm-0 900 0 0 0 450 0 0 0 0 0 0
"""
NETDEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets ...
    lo: 999999 1 0 0 0 0 0 0 999999 1 0 0 0 0 0 0
  eth0: 1000000 10 0 0 0 0 0 0 250000 5 0 0 0 0 0 0
"""


def _output(diskstats: str = DISKSTATS, netdev: str = NETDEV, physical: str = "vda\n") -> str:
    sep = metrics.SEPARATOR
    return (
        "cpu  10 0 10 80 0 0 0 0 0 0\n"
        f"{sep}\nMemTotal: 1000 kB\nMemAvailable: 500 kB\n{sep}\n0.5 0.4 0.3 1/100 5\n"
        f"{sep}\n100.0 50.0\n{sep}\nFilesystem 1024-blocks Used Available Capacity Mounted on\n"
        f"/dev/vda1 1000 250 750 25% /\n{sep}\n{diskstats}{sep}\n{netdev}{sep}\n{physical}"
    )


def test_counters_count_physical_disks_once_and_skip_loopback() -> None:
    sample = metrics.parse(_output(), timezone.now())
    # vda only: its partition and the device-mapper volume on it are the same operations.
    assert sample.disk_ios_total == 1500
    assert sample.net_bytes_total == 1_250_000  # eth0 in and out, lo left out
    unknown = metrics.parse(_output(physical=""), timezone.now())
    assert unknown.disk_ios_total is None


def test_rates_need_two_samples_and_survive_a_reboot() -> None:
    now = timezone.now()
    first = metrics.parse(_output(), now - datetime.timedelta(seconds=10))
    second = metrics.parse(
        _output(DISKSTATS.replace("vda 1000", "vda 3000"), NETDEV.replace("1000000", "6000000")),
        now,
    )
    assert metrics.counter_rate(None, second, "disk_ios_total") is None
    assert metrics.counter_rate(first, second, "disk_ios_total") == 200.0
    assert metrics.counter_rate(first, second, "net_bytes_total", 8 / 1_000_000) == 4.0
    # After a reboot the counters start again from zero: no rate rather than a negative one.
    assert metrics.counter_rate(second, first, "disk_ios_total") is None


def _zone(cast: Cast, name: str) -> Zone:
    return server_actions.create_zone(actor=None, customer=cast.ministry, name=name)


def _node(cast: Cast, zone: Zone, name: str, roles: list[str], **capacity_fields) -> Node:
    return Node.objects.create(
        customer=cast.ministry,
        customer_path=cast.ministry.path,
        zone=zone,
        hostname=name,
        ssh_address="192.0.2.10",
        status=NodeStatus.ACTIVE,
        roles=roles,
        **capacity_fields,
    )


def _measure(node: Node, iops: list[float], mbit: list[float]) -> None:
    now = timezone.now()
    for i, (disk, net) in enumerate(zip(iops, mbit, strict=True)):
        MetricSample.objects.create(
            node=node, at=now - datetime.timedelta(minutes=5 * i + 1), disk_iops=disk, net_mbit=net
        )


def _mailboxes(cast: Cast, domain_name: str, node: Node, count: int) -> None:
    domain = mail_actions.create_domain(
        actor=None, customer=cast.department, name=domain_name, contact_email="ops@example.org"
    )
    DomainPlacement.objects.create(domain=domain, node=node)
    for i in range(count):
        mail_actions.create_mailbox(
            actor=None, domain=domain, local_part=f"user{i}", password="Correct-Horse-42"
        )


def test_each_zone_says_what_it_needs(cast: Cast) -> None:
    short = _zone(cast, "DC-short")
    store = _node(cast, short, "imap1.example", ["imap"], disk_iops_capacity=1000)
    _node(cast, short, "smtp1.example", ["smtp"], network_mbit_capacity=100)
    _mailboxes(cast, "short.example", store, 3)
    # 3 users: guideline row of 500 users (800 IOPS, 3 Mbit/s); recommended ×3.
    _measure(store, [10.0] * 5, [1.0] * 5)

    busy = _zone(cast, "DC-busy")
    busy_store = _node(
        cast, busy, "imap2.example", ["imap"], disk_iops_capacity=5000, network_mbit_capacity=20
    )
    _mailboxes(cast, "busy.example", busy_store, 2)
    # Heavier than the guideline expects: 1,000 IOPS measured for 2 users.
    _measure(busy_store, [900.0, 1000.0, 1000.0, 1000.0, 950.0], [5.0] * 5)

    empty = _zone(cast, "DC-empty")
    _node(cast, empty, "smtp2.example", ["smtp"])

    zones, unplaced = capacity.for_user(cast.sub_admin)
    by_name = {z.zone.name: z for z in zones}
    assert unplaced == 0

    s = by_name["DC-short"]
    assert s.users == 3
    assert (s.disk.guideline, s.disk.recommended, s.disk.declared) == (800, 2400, 1000)
    assert s.disk.shortfall == 1400 and s.disk.measured_p95 == 10.0
    # Network covers both nodes: 100 declared on the SMTP node, the IMAP node unknown.
    assert (s.network.recommended, s.network.declared, s.network.undeclared_nodes) == (9, 100, 1)
    assert s.status == "short"
    assert any("1,400" in need and "IOPS" in need for need in s.needs)
    assert any("no declared capacity" in need for need in s.needs)

    b = by_name["DC-busy"]
    assert b.disk.measured_p95 == pytest.approx(1000.0)
    assert b.disk.recommended == 3000  # the measured load ×3, above the guideline's 2,400
    assert b.disk.shortfall == 0
    assert b.network.recommended == 15  # 5 Mbit/s measured ×3 (guideline 3)
    assert b.network.load_percent == 25.0
    assert b.status == "ok"
    assert any("above the guideline" in need for need in b.needs)

    e = by_name["DC-empty"]
    assert e.users == 0 and e.needs == [] and e.status == "ok"


def test_measured_load_near_the_declared_capacity_is_flagged(cast: Cast) -> None:
    zone = _zone(cast, "DC-hot")
    store = _node(
        cast, zone, "imap3.example", ["imap"], disk_iops_capacity=10_000, network_mbit_capacity=10
    )
    _mailboxes(cast, "hot.example", store, 1)
    _measure(store, [50.0] * 4, [9.0] * 4)
    (z,), _ = capacity.for_user(cast.sub_admin)
    assert z.network.load_percent == 90.0
    assert z.status == "short"
    assert any("90.0 %" in need for need in z.needs)


def test_scope_counts_only_what_the_administrator_sees(cast: Cast) -> None:
    zone = _zone(cast, "DC-scoped")
    store = _node(cast, zone, "imap4.example", ["imap"], disk_iops_capacity=5000)
    _mailboxes(cast, "scoped.example", store, 2)
    assert capacity.for_user(cast.sibling_admin) == ([], 0)
    api = token_client(cast.sibling_admin)
    assert api.get("/api/v1/zones/capacity/").json() == []


def test_api_reports_capacity_and_node_declarations_are_validated_and_audited(
    cast: Cast,
) -> None:
    zone = _zone(cast, "DC-api")
    store = _node(cast, zone, "imap5.example", ["imap"])
    _mailboxes(cast, "api.example", store, 1)
    api = token_client(cast.sub_admin)
    (row,) = api.get("/api/v1/zones/capacity/").json()
    assert row["zoneName"] == "DC-api" and row["users"] == 1 and row["status"] == "unknown"
    assert row["diskIops"]["declared"] is None and row["diskIops"]["recommended"] == 2400

    response = api.patch(
        f"/api/v1/nodes/{store.pk}/",
        {"diskIopsCapacity": 0, "networkMbitCapacity": "fast"},
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"diskIopsCapacity", "networkMbitCapacity"}
    store.refresh_from_db()
    assert store.disk_iops_capacity is None

    response = api.patch(
        f"/api/v1/nodes/{store.pk}/",
        {"diskIopsCapacity": 3000, "networkMbitCapacity": 1000},
        format="json",
    )
    assert response.status_code == 200, response.content
    record = AuditRecord.objects.filter(action="node.update").latest("pk")
    assert record.changes["after"]["disk_iops_capacity"] == 3000
    (row,) = api.get("/api/v1/zones/capacity/").json()
    assert row["status"] == "ok" and row["diskIops"]["shortfall"] == 0

    # Cleared again: unknown, not zero.
    api.patch(f"/api/v1/nodes/{store.pk}/", {"diskIopsCapacity": None}, format="json")
    store.refresh_from_db()
    assert store.disk_iops_capacity is None


def test_dashboard_shows_capacity_and_the_node_form_edits_it(cast: Cast) -> None:
    zone = _zone(cast, "DC-portal")
    store = _node(cast, zone, "imap6.example", ["imap"], disk_iops_capacity=1000)
    _mailboxes(cast, "portal.example", store, 1)
    client = Client()
    assert client.login(username=cast.sub_admin.username, password=PASSWORD)
    page = client.get(reverse("servers:home")).content.decode()
    assert 'id="capacity"' in page and "DC-portal" in page
    assert "1,400" in page  # what the zone needs, in the needs column

    url = reverse("servers:node-edit", args=[store.pk])
    form = {"zone": zone.pk, "roles": ["imap"], "ssh_port": 22, "storage_service": "zfs-fuse"}
    response = client.post(url, {**form, "disk_iops_capacity": "-5"})
    assert response.status_code == 200 and "disk_iops_capacity" in response.context["form"].errors
    response = client.post(url, {**form, "disk_iops_capacity": "2400"})
    assert response.status_code == 302
    store.refresh_from_db()
    assert store.disk_iops_capacity == 2400
    page = client.get(reverse("servers:home")).content.decode()
    assert "1,400" not in page
