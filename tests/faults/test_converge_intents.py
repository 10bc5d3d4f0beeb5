"""Converge intents in PostgreSQL: outbox, generations, lease with fencing, backoff, alert.

No node is contacted here: converge jobs are queued but not dispatched to a worker (the
dispatch only records the job id). tests/faults/test_converge_faults.py runs the same
machinery against real nodes and a real worker.
"""

from __future__ import annotations

import datetime

import pytest
from django.db import transaction
from django.utils import timezone

from deploy import dirty
from deploy.models import NodeConvergeState
from deploy.reconcile import converge_dirty_nodes
from servers.models import NodeAlert
from tests.api.test_servers_api import make_node
from tests.fixtures import Cast
from tests.mail.helpers import make_domain, make_mailbox
from ums import jobs as jobs_module
from ums import outbox
from ums.models import Job, Outbox

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def dispatched(monkeypatch) -> list[int]:
    sent: list[int] = []
    monkeypatch.setattr(jobs_module, "_dispatch", sent.append)
    return sent


@pytest.fixture
def smtp(cast: Cast, settings):
    settings.UMS_AUTO_CONVERGE = True
    node = make_node(cast.ministry)
    node.roles = ["smtp"]
    node.save()
    return node


def state(node) -> NodeConvergeState:
    return NodeConvergeState.objects.get(node=node)


def test_a_mail_change_writes_its_intent_in_its_own_transaction(
    cast: Cast, smtp, django_capture_on_commit_callbacks
) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        make_domain(cast.ministry, "rolled-back.example")
        raise RuntimeError
    assert not Outbox.objects.exists()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        make_domain(cast.ministry, "ministry.example")
    row = Outbox.objects.get()
    assert row.topic == "mail.changed" and row.processed_at is None
    assert row.customer_path == cast.ministry.path
    # Nothing touched the node's row inside the user's transaction: append-only.
    assert not NodeConvergeState.objects.exists()
    assert callbacks  # the fast path runs after commit


def test_after_commit_the_intent_becomes_a_generation_and_one_queued_converge(
    cast: Cast, smtp, django_capture_on_commit_callbacks, dispatched: list[int]
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        domain = make_domain(cast.ministry, "ministry.example")
    with django_capture_on_commit_callbacks(execute=True):
        make_mailbox(domain, "alice")
    assert dispatched == [state(smtp).queued_job_id]
    assert Outbox.objects.filter(processed_at__isnull=True).count() == 0
    current = state(smtp)
    assert current.desired_generation == 2 and current.applied_generation == 0
    # The second change coalesced into the converge queued by the first.
    jobs = Job.objects.filter(kind="node.converge", object_id=str(smtp.pk))
    assert jobs.count() == 1 and current.queued_job_id == jobs.get().pk


def test_an_intent_whose_after_commit_step_was_lost_is_consumed_by_the_reconciler(
    cast: Cast, smtp, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        make_domain(cast.ministry, "ministry.example")  # the process "died" after commit
    assert outbox.process_pending() == {}  # too young: the fast path may still come
    Outbox.objects.update(created_at=timezone.now() - datetime.timedelta(seconds=30))
    with django_capture_on_commit_callbacks(execute=False):
        assert outbox.process_pending() == {"processed": 1}
    assert state(smtp).dirty
    assert outbox.process_pending() == {}  # exactly once


def test_one_lease_per_node_a_dead_holder_lapses_and_a_late_one_is_fenced(smtp, settings) -> None:
    dirty.bump([smtp.pk], reason="test")
    first = dirty.acquire(smtp.pk, owner="job:1")
    assert first is not None and first.generation == 1
    assert dirty.acquire(smtp.pk, owner="job:2") is None
    assert first.renew()
    # The holder died: its lease lapses after UMS_CONVERGE_LEASE_SECONDS, not an hour.
    NodeConvergeState.objects.filter(node=smtp).update(
        lease_expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    dirty.bump([smtp.pk], reason="meanwhile")
    second = dirty.acquire(smtp.pk, owner="job:2")
    assert second is not None and second.token > first.token and second.generation == 2
    # The late holder cannot record its (older) outcome, nor renew.
    assert not dirty.succeeded(first)
    assert not first.renew()
    assert state(smtp).applied_generation == 0
    assert dirty.succeeded(second)
    assert state(smtp).applied_generation == 2 and not state(smtp).dirty


def test_changes_during_a_converge_leave_the_node_dirty_for_the_next_run(smtp) -> None:
    dirty.bump([smtp.pk])
    lease = dirty.acquire(smtp.pk, owner="job:1")
    dirty.bump([smtp.pk])  # committed while the converge runs
    assert dirty.succeeded(lease)
    current = state(smtp)
    assert current.applied_generation == 1 and current.desired_generation == 2
    assert dirty.is_dirty(smtp.pk)


def test_a_failed_converge_stays_dirty_backs_off_and_alerts_after_the_cap(smtp) -> None:
    dirty.bump([smtp.pk])
    delays = []
    for attempt in range(1, dirty.ALERT_AFTER + 1):
        lease = dirty.acquire(smtp.pk, owner=f"job:{attempt}")
        assert lease is not None, attempt
        assert dirty.failed(lease, "Connection refused by node1.ums.test:22") == attempt
        current = state(smtp)
        assert current.dirty and current.lease_owner == ""
        delays.append(round((current.next_attempt_at - timezone.now()).total_seconds()))
    assert delays == [5, 10, 20, 40, 80]
    assert dirty.retry_delay(30) == datetime.timedelta(minutes=5)  # the cap
    alert = NodeAlert.objects.get(node=smtp, resolved_at__isnull=True)
    assert "Connection refused" in alert.message and smtp.hostname in alert.message

    lease = dirty.acquire(smtp.pk, owner="job:9")
    assert dirty.succeeded(lease)
    current = state(smtp)
    assert current.failures == 0 and current.last_error == "" and not current.dirty
    assert not NodeAlert.objects.filter(node=smtp, resolved_at__isnull=True).exists()


def test_the_reconciler_queues_a_converge_for_a_dirty_node_nobody_works_on(
    smtp, django_capture_on_commit_callbacks
) -> None:
    dirty.bump([smtp.pk])
    with django_capture_on_commit_callbacks(execute=False):
        assert converge_dirty_nodes() == {"queued": 1}
        # Queued and not started: not queued again.
        NodeConvergeState.objects.filter(node=smtp).update(next_attempt_at=timezone.now())
        assert converge_dirty_nodes() == {"busy": 1}
    # A running holder: left alone.
    Job.objects.all().update(status=Job.FAILED)
    lease = dirty.acquire(smtp.pk, owner="job:77")
    assert converge_dirty_nodes() == {"busy": 1}
    dirty.failed(lease, "boom")
    # Backing off: not due yet.
    assert converge_dirty_nodes() == {}
    NodeConvergeState.objects.filter(node=smtp).update(next_attempt_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=False):
        assert converge_dirty_nodes() == {"queued": 1}
    assert "retry after 1 failure" in Job.objects.latest("pk").params["reason"]


def test_a_lease_whose_holder_job_is_over_is_taken_over(smtp) -> None:
    dirty.bump([smtp.pk])
    holder = Job.objects.create(kind="node.converge", title="t", customer_path="/")
    lease = dirty.acquire(smtp.pk, owner=f"job:{holder.pk}")
    Job.objects.filter(pk=holder.pk).update(status=Job.RUNNING, owner="nowhere:1")
    assert dirty.holder_is_dead(smtp.pk) is None  # another host: trust the lease
    Job.objects.filter(pk=holder.pk).update(status=Job.FAILED)
    assert dirty.holder_is_dead(smtp.pk) == lease.token
    taken = dirty.acquire(smtp.pk, owner="job:999", steal=lease.token)
    assert taken is not None and taken.token == lease.token + 1


def test_a_node_job_given_up_shows_on_the_node(smtp) -> None:
    job = Job.objects.create(
        kind="node.restart_service",
        title="Restart a service: smtp1",
        customer_path="/",
        object_type="servers.node",
        object_id=str(smtp.pk),
        status=Job.RUNNING,
        attempts=3,
    )
    assert jobs_module.fail_abandoned(job.pk, 3, "The worker stopped 3 times.")
    alert = NodeAlert.objects.get(node=smtp, kind="job_failed")
    assert alert.message == "Restart a service: smtp1: The worker stopped 3 times."


def test_the_node_page_shows_a_converge_as_pending_until_it_succeeded(cast: Cast, smtp) -> None:
    from django.test import Client
    from django.urls import reverse

    from tests.fixtures import PASSWORD

    client = Client()
    assert client.login(username=cast.sub_admin.username, password=PASSWORD)
    url = reverse("servers:node-detail", args=[smtp.pk])
    dirty.bump([smtp.pk])
    lease = dirty.acquire(smtp.pk, owner="job:1")
    assert "Being applied" in client.get(url).content.decode()
    dirty.failed(lease, "Connection refused")
    dirty.failed(dirty.acquire(smtp.pk, owner="job:2"), "Connection refused")
    page = client.get(url).content.decode()
    assert "Not applied yet: failed 2 times in a row, retried automatically" in page
    assert dirty.succeeded(dirty.acquire(smtp.pk, owner="job:3"))
    page = client.get(url).content.decode()
    assert "Applied" in page and "Not applied yet" not in page


def test_processed_intents_are_purged_after_a_week_at_most_once_an_hour() -> None:
    from django.core.cache import cache as shared

    shared.delete(outbox._purge_key())
    old = timezone.now() - outbox.KEEP_PROCESSED - datetime.timedelta(hours=1)
    recent = timezone.now() - datetime.timedelta(days=1)
    for processed_at in (old, old, recent, None):
        row = outbox.write("test.nobody", "/", {})
        Outbox.objects.filter(pk=row.pk).update(
            processed_at=processed_at, created_at=timezone.now()
        )
    assert outbox.process_pending() == {"purged": 2}
    assert Outbox.objects.count() == 2
    Outbox.objects.filter(processed_at=recent).update(processed_at=old)
    assert outbox.process_pending() == {}  # not again within the hour
    assert Outbox.objects.count() == 2
