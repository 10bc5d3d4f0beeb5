"""The automatic failover probe without nodes: real TCP listeners on the loopback stand
for a primary that answers, a closed port for one that is gone. Which primaries are
probed (only those whose failover is automatic), the count of failures in a row over the
policy's delay, a blip that resets it, and the audited failover jobs it starts (mail
domains and the cloud database). On real nodes: test_autofailover_node.py and
tests/clouddb/test_clouddb_autofailover_node.py."""

from __future__ import annotations

import datetime
import socket
from collections.abc import Iterator

import pytest
from django.utils import timezone

from audit.models import AuditRecord
from clouddb.models import CloudDbCluster, CloudDbMember
from replication import autofailover, tasks
from replication.models import DomainReplica, PrimaryProbe, ReplicationPolicy
from servers.models import Node
from tests.fixtures import Cast
from ums.models import Job

from .test_replication import _node, _placed, no_dispatch, zfs_store  # noqa: F401

pytestmark = pytest.mark.django_db
SECOND = datetime.timedelta(seconds=1)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def _closed_port() -> int:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def closed_services(monkeypatch: pytest.MonkeyPatch) -> None:
    # The service ports are closed on the loopback: only the node's "SSH" port decides.
    monkeypatch.setattr(autofailover, "IMAPS_PORT", _closed_port())
    monkeypatch.setattr(autofailover, "MARIADB_PORT", _closed_port())


def _loopback(node, port: int):
    node.ssh_address, node.ssh_port = "127.0.0.1", port
    node.save(update_fields=["ssh_address", "ssh_port"])
    return node


def _auto(cast: Cast, on: bool = True) -> None:
    ReplicationPolicy.objects.update_or_create(
        customer=cast.government,
        defaults={"customer_path": cast.government.path, "auto_failover": on},
    )


def _mail(cast: Cast, port: int):
    primary = _loopback(_node(cast.government, "imap1.example.org"), port)
    replica = _node(cast.government, "imap2.example.org")
    domain = _placed(cast.ministry, "probe.example", primary)
    DomainReplica.objects.create(
        domain=domain, node=replica, customer_path=domain.customer_path,
        state=DomainReplica.SYNCED, synced_at=timezone.now(),
    )  # fmt: skip
    return domain, primary, replica


@pytest.mark.usefixtures("zfs_store")
def test_only_automatic_primaries_are_probed_and_the_default_delay_is_30_s(
    cast: Cast, listener: socket.socket
) -> None:
    domain, primary, _ = _mail(cast, listener.getsockname()[1])
    assert autofailover.targets() == {}  # automatic failover is off by default
    _auto(cast)
    assert ReplicationPolicy.objects.get().failover_delay_seconds == 30
    (target,) = autofailover.targets().values()
    assert target.node == primary and target.domains == [(domain, 30)]
    assert target.ports == {primary.ssh_port, autofailover.IMAPS_PORT}
    summary = autofailover.run()
    assert summary == {"probed": 1, "down": [], "failovers": []}
    row = PrimaryProbe.objects.get(node=primary)
    assert row.failures == 0 and row.answered_at is not None
    _auto(cast, on=False)
    assert autofailover.run()["probed"] == 0
    assert not PrimaryProbe.objects.exists()  # forgotten once no longer probed


@pytest.mark.usefixtures("zfs_store", "no_dispatch", "closed_services")
def test_consecutive_failures_over_the_delay_fail_over_and_a_blip_does_not(
    cast: Cast,
) -> None:
    _auto(cast)
    down = _closed_port()
    _, primary, replica = _mail(cast, down)
    t0 = timezone.now()
    # A blip: two failures in 10 s, then the node answers again: the count resets.
    assert autofailover.run(t0)["failovers"] == []
    assert autofailover.run(t0 + 10 * SECOND)["failovers"] == []
    with socket.create_server(("127.0.0.1", 0)) as back:
        _loopback(primary, back.getsockname()[1])
        assert autofailover.run(t0 + 20 * SECOND)["failovers"] == []
    row = PrimaryProbe.objects.get(node=primary)
    assert (row.failures, row.failing_since) == (0, None)
    _loopback(primary, down)
    # Down for good: three failures but only 20 s of them, then 30 s: failed over.
    t1 = t0 + 30 * SECOND
    for step in (0, 10, 20):
        assert autofailover.run(t1 + step * SECOND)["failovers"] == []
    summary = autofailover.run(t1 + 30 * SECOND)
    assert summary["failovers"] == ["probe.example"] and summary["down"] == [primary.hostname]
    job = Job.objects.get(kind="replication.failover")
    assert (job.params["node_id"], job.params["from_node_id"]) == (replica.pk, primary.pk)
    audit = AuditRecord.objects.get(action="replication.auto_failover")
    assert audit.changes["failed_probes"] == 4 and audit.changes["job"] == job.pk
    # The job is pending: no second one.
    assert autofailover.run(t1 + 40 * SECOND)["failovers"] == []
    assert Job.objects.filter(kind="replication.failover").count() == 1


@pytest.mark.usefixtures("zfs_store", "no_dispatch", "closed_services")
def test_two_failures_are_never_enough_even_over_a_long_delay(
    cast: Cast,
) -> None:
    _auto(cast)
    ReplicationPolicy.objects.update(failover_delay_seconds=0)
    _mail(cast, _closed_port())
    t0 = timezone.now()
    assert autofailover.run(t0)["failovers"] == []
    assert autofailover.run(t0 + 30 * SECOND)["failovers"] == []
    assert autofailover.run(t0 + 40 * SECOND)["failovers"] == ["probe.example"]


@pytest.mark.usefixtures("zfs_store", "no_dispatch", "closed_services")
def test_failures_before_a_silence_and_one_after_it_are_not_in_a_row(cast: Cast, settings) -> None:
    """The probe's worker SIGKILLed mid-series (tests/replication/
    test_autofailover_faults.py on nodes): nobody probes while it is down, the node may
    answer all that time; one failed probe after the restart (a blip) must not complete
    the old run into a failover."""
    settings.UMS_FAILOVER_PROBE_INTERVAL, settings.UMS_FAILOVER_PROBE_TIMEOUT = 10, 2
    _auto(cast)
    _mail(cast, _closed_port())
    t0 = timezone.now()
    for step in (0, 10):
        assert autofailover.run(t0 + step * SECOND)["failovers"] == []
    # Silent for 35 s (> 3 intervals + 2 timeouts), then one failure: a new run of one.
    restarted = t0 + 45 * SECOND
    assert autofailover.run(restarted)["failovers"] == []
    row = PrimaryProbe.objects.get()
    assert (row.failures, row.failing_since) == (1, restarted)
    assert autofailover.run(restarted + 10 * SECOND)["failovers"] == []
    # Still down, probed in a row again over the delay: it fails over, once.
    assert autofailover.run(restarted + 30 * SECOND)["failovers"] == ["probe.example"]
    assert Job.objects.filter(kind="replication.failover").count() == 1


@pytest.mark.usefixtures("no_dispatch", "closed_services")
def test_the_cloud_database_fails_over_under_the_same_policy(
    cast: Cast,
) -> None:
    primary = _loopback(_node(cast.government, "db1.example.org"), _closed_port())
    replica = _node(cast.government, "db2.example.org", zone=primary.zone)
    cluster = CloudDbCluster.objects.create(
        zone=primary.zone, customer_path=primary.zone.customer_path, primary=primary
    )
    for node, state in ((primary, CloudDbMember.PRIMARY), (replica, CloudDbMember.REPLICA)):
        CloudDbMember.objects.create(
            cluster=cluster, node=node, customer_path=node.customer_path, state=state
        )
    t0 = timezone.now()
    assert autofailover.run(t0)["probed"] == 0  # not automatic
    _auto(cast)
    (target,) = autofailover.targets().values()
    assert target.ports == {primary.ssh_port, autofailover.MARIADB_PORT}
    for step in (0, 10, 20):
        assert autofailover.run(t0 + step * SECOND)["failovers"] == []
    summary = autofailover.run(t0 + 30 * SECOND)
    assert summary["failovers"] == [f"clouddb:{primary.zone.name}"]
    job = Job.objects.get(kind="clouddb.failover")
    assert (job.params["node_id"], job.params["from_node_id"]) == (replica.pk, primary.pk)
    assert AuditRecord.objects.filter(action="clouddb.auto_failover").count() == 1
    assert autofailover.run(t0 + 40 * SECOND)["failovers"] == []


@pytest.mark.usefixtures("zfs_store", "no_dispatch")
def test_the_sweep_fallback_leaves_a_primary_the_probe_reaches(
    cast: Cast, listener: socket.socket
) -> None:
    _auto(cast)
    _, primary, _ = _mail(cast, listener.getsockname()[1])
    now = timezone.now()
    Node.objects.filter(pk=primary.pk).update(status="offline", last_seen_at=now - 300 * SECOND)
    assert autofailover.run(now)["failovers"] == []  # it answers
    assert tasks.schedule(now)["failovers"] == []  # offline in the sweep only: left alone
    PrimaryProbe.objects.all().delete()  # no probe (e.g. beat stopped it): the fallback acts
    assert tasks.schedule(now)["failovers"] == ["probe.example"]
