"""Node lifecycle against real sshd nodes: approval, jobs, metrics, host keys, offline."""

from __future__ import annotations

import os

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from deploy import controller_keys, latency, metrics, persistent
from deploy.actions import start_node_action
from deploy.connector.base import AuthenticationFailed
from deploy.connector.ssh import SSHConnector
from deploy.nodes import session
from servers import actions as server_actions
from servers.choices import NodeStatus
from servers.models import MetricSample, Node, NodeAlert, ZoneLatency
from tests.fixtures import Cast, token_client
from ums.models import Job

from .nodes import registered_node, stand_in_calls

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


def approved(cast: Cast, zone, tnode) -> Node:
    node = registered_node(zone, tnode)
    server_actions.approve_node(actor=cast.sub_admin, node=node)
    node.refresh_from_db()
    return node


def test_approval_pins_host_key_and_verification_reads_facts(
    cast: Cast, zone, one_node, controller_key
) -> None:
    node = registered_node(zone, one_node)
    response = token_client(cast.sub_admin).post(reverse("node-approve", args=[node.pk]))
    assert response.status_code == 200, response.content
    node.refresh_from_db()
    assert node.pinned_host_keys == [one_node.host_key]
    assert node.status == NodeStatus.ACTIVE
    assert node.os_id == "debian"
    assert node.cpus >= 1
    job = Job.objects.get(kind="node.verify")
    assert job.status == Job.SUCCEEDED
    assert "connected to" in job.log
    assert AuditRecord.objects.filter(action="node.approve", object_id=str(node.pk)).exists()


def test_node_action_runs_as_job_and_records_output(
    cast: Cast, zone, one_node, controller_key
) -> None:
    node = approved(cast, zone, one_node)
    response = token_client(cast.sub_admin).post(
        reverse("node-node-action", args=[node.pk]),
        {"action": "restart_service", "service": "postfix"},
        format="json",
    )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.SUCCEEDED, job.error
    # Debian test nodes have no systemd, so the SysV form is used.
    assert stand_in_calls(one_node) == ["service postfix restart"]
    assert "stand-in service ran: postfix restart" in job.result["stdout"]
    assert job.requested_by_id == cast.sub_admin.pk
    assert AuditRecord.objects.filter(action="node.action", object_id=str(node.pk)).exists()


def test_service_name_that_could_break_out_is_refused(
    cast: Cast, zone, one_node, controller_key
) -> None:
    node = approved(cast, zone, one_node)
    for bad in ("postfix; reboot", "$(id)", "-rf", "a b"):
        response = token_client(cast.sub_admin).post(
            reverse("node-node-action", args=[node.pk]),
            {"action": "restart_service", "service": bad},
            format="json",
        )
        assert response.status_code == 400
    assert stand_in_calls(one_node) == []


def test_reboot_without_systemd_never_reboots_the_machine(
    cast: Cast, zone, one_node, controller_key
) -> None:
    # Without systemd the controller is the node's init (deploy/node_daemons.py): a reboot
    # restarts the daemons converge installed (none here), never ``reboot`` itself, which
    # in a container or namespace would act on the host. The stand-in would record it.
    node = approved(cast, zone, one_node)
    job = start_node_action(actor=cast.sub_admin, node=node, name="reboot")
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    assert job.result == {"systemd": False, "stopped": {}, "started": {}, "failed": {}}
    assert stand_in_calls(one_node) == []


def test_metrics_collected_from_real_nodes(cast: Cast, zone, node_cluster, controller_key) -> None:
    cluster = node_cluster(3)
    nodes = [approved(cast, zone, t) for t in cluster.nodes]
    assert metrics.sweep() == {"collected": 3, "missed": 0}
    # Four megabytes to the first node between the sweeps: its network rate must show it.
    with session(nodes[0]) as conn:
        conn.put_file("/tmp/ums-traffic", os.urandom(4_000_000), mode=0o600)
    assert metrics.sweep() == {"collected": 3, "missed": 0}
    for node in nodes:
        samples = MetricSample.objects.filter(node=node).order_by("at")
        assert samples.count() == 2
        first, latest = samples
        assert latest.memory_total_kb > 0
        assert latest.uptime_seconds > 0
        assert latest.cpu_percent is not None
        assert any(d["mount"] == "/" for d in latest.disks)
        # Disk operations and network bytes are counters; their rates need two samples.
        assert first.disk_iops is None and first.net_mbit is None
        assert latest.disk_ios_total >= first.disk_ios_total
        assert latest.disk_iops is not None and latest.disk_iops >= 0
        assert latest.net_mbit is not None
        node.refresh_from_db()
        assert node.last_seen_at is not None
    first, latest = MetricSample.objects.filter(node=nodes[0]).order_by("at")
    assert latest.net_bytes_total - first.net_bytes_total >= 4_000_000
    seconds = (latest.at - first.at).total_seconds()
    assert latest.net_mbit >= round(4_000_000 * 8 / 1_000_000 / seconds, 1) > 0


def test_sweeps_keep_the_connection_and_survive_a_node_restart(
    cast: Cast, zone, one_node, controller_key
) -> None:
    node = approved(cast, zone, one_node)
    assert metrics.sweep() == {"collected": 1, "missed": 0}
    (kept,) = [c for c, _opened in persistent.POOL._idle.values()]
    assert metrics.sweep() == {"collected": 1, "missed": 0}
    (again,) = [c for c, _opened in persistent.POOL._idle.values()]
    assert again is kept and kept.connections_opened == 1  # no second handshake
    # The node restarts (every process in it, the kept session's sshd too): the dead
    # connection is replaced at once, not counted as a missed collection.
    one_node.restart()
    assert metrics.sweep() == {"collected": 1, "missed": 0}
    (fresh,) = [c for c, _opened in persistent.POOL._idle.values()]
    assert fresh is not kept
    node.refresh_from_db()
    assert node.missed_collections == 0
    # A new host key behind the kept connection is caught at the next handshake: the
    # restart kills the kept session, so the sweep meets the new key and flags it.
    one_node.regenerate_host_key()
    assert metrics.sweep()["missed"] == 1
    node.refresh_from_db()
    assert node.host_key_alert
    assert len(persistent.POOL) == 0


def test_kept_connections_expire_and_are_not_kept_when_disabled(
    cast: Cast, zone, one_node, controller_key, settings
) -> None:
    approved(cast, zone, one_node)
    settings.UMS_METRICS_PERSIST_SECONDS = 0
    assert metrics.sweep() == {"collected": 1, "missed": 0}
    assert len(persistent.POOL) == 0
    settings.UMS_METRICS_PERSIST_SECONDS = 600
    metrics.sweep()
    ((key, (kept, opened)),) = persistent.POOL._idle.items()
    persistent.POOL._idle[key] = (kept, opened - 601)  # older than the limit
    metrics.sweep()
    (fresh,) = [c for c, _opened in persistent.POOL._idle.values()]
    assert fresh is not kept and not kept.is_connected


def test_new_host_key_is_refused_and_flagged(cast: Cast, zone, one_node, controller_key) -> None:
    node = approved(cast, zone, one_node)
    one_node.regenerate_host_key()
    assert metrics.sweep()["missed"] == 1
    node.refresh_from_db()
    assert node.host_key_alert
    assert node.status == NodeStatus.DEGRADED
    assert NodeAlert.objects.filter(node=node, kind="host_key_mismatch").exists()
    assert AuditRecord.objects.filter(action="node.host_key_mismatch").exists()
    # Every later connection is refused before it is attempted.
    job = start_node_action(
        actor=cast.sub_admin, node=node, name="restart_service", service="nginx"
    )
    job.refresh_from_db()
    assert job.status == Job.FAILED
    assert "Host key mismatch" in job.error
    assert stand_in_calls(one_node) == []


def test_stopped_node_goes_offline_after_three_misses_and_comes_back(
    cast: Cast, zone, one_node, controller_key, settings
) -> None:
    settings.UMS_SSH_RETRIES = 0
    settings.UMS_SSH_CONNECT_TIMEOUT = 2
    node = approved(cast, zone, one_node)
    one_node.stop()
    for expected_misses in (1, 2):
        metrics.sweep()
        node.refresh_from_db()
        assert node.missed_collections == expected_misses
        assert node.status == NodeStatus.ACTIVE
    metrics.sweep()
    node.refresh_from_db()
    assert node.status == NodeStatus.OFFLINE
    assert AuditRecord.objects.filter(action="node.status.offline", object_id=str(node.pk)).exists()
    assert NodeAlert.objects.filter(node=node, kind="offline", resolved_at=None).exists()
    one_node.start()
    metrics.sweep()
    node.refresh_from_db()
    assert node.status == NodeStatus.ACTIVE
    assert not NodeAlert.objects.filter(node=node, kind="offline", resolved_at=None).exists()


def test_rotate_controller_key(cast: Cast, zone, one_node, controller_key) -> None:
    node = approved(cast, zone, one_node)
    old = controller_keys.by_version(node.controller_key_version)
    job = start_node_action(actor=cast.sub_admin, node=node, name="rotate_key")
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    node.refresh_from_db()
    assert node.controller_key_version == old.version + 1
    new = controller_keys.by_version(node.controller_key_version)
    assert new.private_key_pem != old.private_key_pem
    assert metrics.sweep()["collected"] == 1
    with (
        pytest.raises(AuthenticationFailed),
        SSHConnector(
            node.ssh_address,
            node.ssh_port,
            pkey=controller_keys.private_key(old),
            known_host_keys=node.pinned_host_keys,
            retries=0,
        ) as conn,
    ):
        conn.run(["true"])


def test_decommission_removes_key_and_keeps_history(
    cast: Cast, zone, one_node, controller_key
) -> None:
    node = approved(cast, zone, one_node)
    metrics.sweep()
    job = start_node_action(actor=cast.sub_admin, node=node, name="decommission")
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    node.refresh_from_db()
    assert node.status == NodeStatus.DECOMMISSIONED
    assert MetricSample.objects.filter(node=node).exists()
    assert metrics.sweep() == {"collected": 0, "missed": 0}
    assert "ums-controller" not in one_node.path("/root/.ssh/authorized_keys").read_text()


def test_zone_latency_measured_between_zones(
    cast: Cast, zone, node_cluster, controller_key
) -> None:
    cluster = node_cluster(2)
    other = server_actions.create_zone(actor=None, customer=cast.government, name="Darkhan DC2")
    approved(cast, zone, cluster.nodes[0])
    approved(cast, other, cluster.nodes[1])
    assert latency.measure() == 2
    measured = ZoneLatency.objects.get(from_zone=zone, to_zone=other)
    assert 0 < measured.rtt_ms < 80
    data = token_client(cast.sub_admin).get(reverse("zone-detail", args=[zone.pk])).json()
    assert data["latencies"][0]["toZoneName"] == "Darkhan DC2"
    assert data["latencies"][0]["warning"] is False
