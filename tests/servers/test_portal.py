"""Servers portal pages: scoping, forms, node actions from the page, charts rendered."""

from __future__ import annotations

import datetime

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from servers import actions as server_actions
from servers.choices import NodeStatus
from servers.models import MetricSample, Node, Zone
from tests.fixtures import PASSWORD, Cast
from ums.models import Job

pytestmark = pytest.mark.django_db


def portal(admin) -> Client:
    client = Client()
    assert client.login(username=admin.username, password=PASSWORD)
    return client


@pytest.fixture
def node(cast: Cast) -> Node:
    zone = server_actions.create_zone(actor=None, customer=cast.ministry, name="DC1")
    node = Node.objects.create(
        customer=cast.ministry,
        customer_path=cast.ministry.path,
        zone=zone,
        hostname="smtp1.gov.example",
        ssh_address="192.0.2.10",
        status=NodeStatus.ACTIVE,
        pinned_host_keys=[
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKvv4K5vzRcZ8x3sV4VqCTeQ2rrYbOsM9cS/KPx7Cqq3"
        ],
        roles=["smtp"],
    )
    now = timezone.now()
    for minutes, cpu in ((30, 10.0), (20, 55.0), (10, 35.0)):
        MetricSample.objects.create(
            node=node,
            at=now - datetime.timedelta(minutes=minutes),
            cpu_percent=cpu,
            memory_total_kb=4_000_000,
            memory_available_kb=1_000_000,
            load1=0.5,
            disks=[{"mount": "/", "size_kb": 1000, "used_kb": 250, "filesystem": "/dev/vda1"}],
        )
    return node


def test_anonymous_is_sent_to_login(node: Node) -> None:
    for url in (reverse("servers:home"), reverse("servers:node-detail", args=[node.pk])):
        response = Client().get(url)
        assert response.status_code == 302
        assert reverse("portal:login") in response["Location"]


def test_outsider_gets_404(cast: Cast, node: Node) -> None:
    client = portal(cast.sibling_admin)
    assert client.get(reverse("servers:node-detail", args=[node.pk])).status_code == 404
    response = client.post(reverse("servers:node-action", args=[node.pk, "reboot"]))
    assert response.status_code == 404
    assert not Job.objects.exists()
    assert client.get("/servers/nodes/" + "9" * 30 + "/").status_code == 404


def test_dashboard_and_node_page_show_figures_and_charts(cast: Cast, node: Node) -> None:
    client = portal(cast.sub_admin)
    page = client.get(reverse("servers:home")).content.decode()
    assert "smtp1.gov.example" in page
    assert "35.0%" in page  # latest CPU
    assert "75.0%" in page  # memory used
    detail = client.get(reverse("servers:node-detail", args=[node.pk])).content.decode()
    assert "<svg" in detail and "polyline" in detail
    assert "SHA256:" in detail


def test_node_action_from_the_page_starts_a_job(cast: Cast, node: Node) -> None:
    client = portal(cast.sub_admin)
    response = client.post(
        reverse("servers:node-action", args=[node.pk, "restart_service"]),
        {"service": "postfix; reboot"},
    )
    assert response.status_code == 302
    assert not Job.objects.exists()
    response = client.post(reverse("servers:node-action", args=[node.pk, "reboot"]))
    job = Job.objects.get()
    assert response["Location"] == reverse("portal:job-detail", args=[job.pk])
    page = client.get(response["Location"]).content.decode()
    assert "<progress" in page


def test_zone_form_refuses_bad_input(cast: Cast) -> None:
    client = portal(cast.sub_admin)
    response = client.post(
        reverse("servers:zone-create"),
        {
            "customer": cast.government.pk,
            "name": "bad\x00name",
            "site_kind": "datacentre",
            "redundancy": "hot-hot",
        },
    )
    assert response.status_code == 200
    assert not Zone.objects.exists()
    response = client.post(
        reverse("servers:zone-create"),
        {
            "customer": cast.isp.pk,
            "name": "Elsewhere",
            "site_kind": "datacentre",
            "redundancy": "hot-hot",
        },
    )
    assert response.status_code == 200
    assert not Zone.objects.exists()
    response = client.post(
        reverse("servers:zone-create"),
        {
            "customer": cast.government.pk,
            "name": "Gov DC",
            "site_kind": "datacentre",
            "redundancy": "hot-warm",
        },
    )
    assert response.status_code == 302
    assert Zone.objects.get().redundancy == "hot-warm"


def test_node_page_shows_the_last_rule_and_signature_update(cast: Cast, node: Node) -> None:
    now = timezone.now()
    node.rule_updates = {
        "checked_at": now.isoformat(),
        "updated_at": (now - datetime.timedelta(days=2)).isoformat(),
        "spamassassin": {"rules.ums.test": {"version": 1002, "status": "current"}},
        "clamav": {"ums.ndb": {"sha256": "ab" * 32, "status": "failed", "error": "<b>bad</b>"}},
        "errors": ["ums.ndb: <b>bad</b>"],
    }
    node.save(update_fields=["rule_updates"])
    page = portal(cast.sub_admin).get(reverse("servers:node-detail", args=[node.pk]))
    text = page.content.decode()
    assert "Rules and signatures" in text and "updated 2\xa0days ago" in text
    assert "rules.ums.test: 1002" in text and "ums.ndb: abababababab" in text
    assert "&lt;b&gt;bad&lt;/b&gt;" in text and "<b>bad</b>" not in text
