"""Held-mail requests without a reachable node: answered at once and shown pending, one
winner per message, idempotency keys of dead requests, and the reconciler re-driving,
retrying and giving up (with the reason) on its own.

Nodes here are rows only (no sshd): one whose jobs are not dispatched (the worker "has
not acted yet"), or one at a port where nothing listens (connection refused, at once).
The real node paths (delivery, markers, dead workers) are in test_hold_backend.py and
test_faults.py.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditRecord
from servers.models import Node
from spamhold import actions
from spamhold import reconcile as spamhold_reconcile
from spamhold.models import HeldMessage, IdempotencyKey, IntentState, OutcomeIntent, Status
from tests.api.test_servers_api import make_node
from tests.fixtures import Cast, token_client
from tests.spamhold.held import make_held
from ums import jobs
from ums.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def undispatched(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Jobs are written but not run: as if the worker had not picked them up yet."""
    sent: list[int] = []
    monkeypatch.setattr(jobs, "_dispatch", sent.append)
    return sent


def held_on_node(cast: Cast, node: Node, **fields: Any) -> HeldMessage:
    return make_held(cast.ministry, node=node, node_name=node.hostname, **fields)


def url(pk: int, verb: str = "release") -> str:
    return f"/api/v1/spamhold/messages/{pk}/{verb}/"


def test_release_answers_202_at_once_and_the_message_stays_onhold_pending(
    cast: Cast, undispatched: list[int]
) -> None:
    message = held_on_node(cast, make_node(cast.ministry))
    response = token_client(cast.sub_admin).post(url(message.pk), {}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["pending"] == [message.pk]
    assert body["result"]["status"] == "ONHOLD" and body["result"]["pending"] == "release"
    assert "waiting for the node" in body["message"]
    request = OutcomeIntent.objects.get(pk=body["request"])
    assert (request.state, request.outcome, request.requested_by) == (
        IntentState.REQUESTED,
        "release",
        cast.sub_admin,
    )
    assert undispatched == [body["job"]] and request.job_id == body["job"]
    assert body["jobUrl"].endswith(f"/jobs/{body['job']}/")
    message.refresh_from_db()
    assert (message.status, message.pending, message.intent_id) == (
        Status.ONHOLD,
        "release",
        request.pk,
    )
    assert AuditRecord.objects.filter(action="spamhold.release", object_id=message.pk).exists()
    # Lists and the detail show it pending; the portal says "Releasing…".
    listed = token_client(cast.sub_admin).get("/api/v1/spamhold/messages/").json()["results"]
    assert [(r["id"], r["status"], r["pending"]) for r in listed] == [
        (message.pk, "ONHOLD", "release")
    ]


def test_a_second_administrator_is_told_who_asked_while_it_is_pending(
    cast: Cast, undispatched: list[int]
) -> None:
    message = held_on_node(cast, make_node(cast.ministry))
    assert token_client(cast.sub_admin).post(url(message.pk), {}, format="json").status_code == 202
    for verb in ("release", "delete"):
        response = token_client(cast.root_admin).post(url(message.pk, verb), {}, format="json")
        assert response.status_code == 409, response.content
        body = response.json()
        assert body["pending"] is True and body["status"] == "ONHOLD"
        assert body["message"].startswith(f"{cast.sub_admin.audit_name} asked to release it at")
    assert OutcomeIntent.objects.count() == 1 and len(undispatched) == 1


def test_bulk_by_ids_answers_202_per_message(cast: Cast, undispatched: list[int]) -> None:
    node = make_node(cast.ministry)
    fresh, taken = held_on_node(cast, node), held_on_node(cast, node)
    actions.delete(actor=cast.root_admin, ids=[taken.pk])
    outside = make_held(cast.shop)
    response = token_client(cast.sub_admin).post(
        "/api/v1/spamhold/release/", {"ids": [fresh.pk, taken.pk, outside.pk]}, format="json"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["pending"] == [fresh.pk] and body["notFound"] == [outside.pk]
    assert [(a["id"], a["pending"], a["outcome"]) for a in body["already"]] == [
        (taken.pk, True, "delete")
    ]
    # Nothing claimable: 200, no request, no job.
    again = token_client(cast.sub_admin).post(
        "/api/v1/spamhold/release/", {"ids": [fresh.pk]}, format="json"
    )
    assert again.status_code == 200 and again.json()["request"] is None
    assert len(undispatched) == 2


def test_expiry_leaves_pending_messages_to_their_request(
    cast: Cast, undispatched: list[int]
) -> None:
    node = make_node(cast.ministry)
    past = timezone.now() - datetime.timedelta(days=1)
    pending, due = (
        held_on_node(cast, node, expires_at=past),
        held_on_node(cast, node, expires_at=past),
    )
    actions.release(actor=cast.sub_admin, ids=[pending.pk])
    assert actions.expire_due()["pending"] == 1
    pending.refresh_from_db()
    due.refresh_from_db()
    assert (pending.pending, due.pending) == ("release", "expire")


# ------------------------------------------------------------------ idempotency keys


def test_a_key_whose_request_died_is_run_again_once_stale(
    cast: Cast, undispatched: list[int]
) -> None:
    message = held_on_node(cast, make_node(cast.ministry))
    client = token_client(cast.sub_admin)
    first = client.post(url(message.pk), {}, format="json", HTTP_IDEMPOTENCY_KEY="dead-1")
    assert first.status_code == 202
    # As if that request had died after inserting its key: "in progress", forever?
    IdempotencyKey.objects.filter(key="dead-1").update(
        status_code=0, response={}, started_at=timezone.now()
    )
    busy = client.post(url(message.pk), {}, format="json", HTTP_IDEMPOTENCY_KEY="dead-1")
    assert busy.status_code == 409 and "still being handled" in busy.json()["message"]
    # No: once stale it runs again; the claim is conditional, so nothing is asked twice.
    IdempotencyKey.objects.filter(key="dead-1").update(
        started_at=timezone.now() - datetime.timedelta(seconds=IdempotencyKey.STALE_SECONDS + 1)
    )
    again = client.post(url(message.pk), {}, format="json", HTTP_IDEMPOTENCY_KEY="dead-1")
    assert again.status_code == 409 and again.json()["pending"] is True
    assert OutcomeIntent.objects.count() == 1 and len(undispatched) == 1
    key = IdempotencyKey.objects.get(key="dead-1")
    assert key.status_code == 409
    # Done: replayed as stored.
    replay = client.post(url(message.pk), {}, format="json", HTTP_IDEMPOTENCY_KEY="dead-1")
    assert replay.json() == again.json() and replay["Idempotent-Replayed"] == "true"


def test_keys_expire_after_a_day(cast: Cast, undispatched: list[int]) -> None:
    node = make_node(cast.ministry)
    message, other = held_on_node(cast, node), held_on_node(cast, node)
    client = token_client(cast.sub_admin)
    client.post(url(message.pk), {}, format="json", HTTP_IDEMPOTENCY_KEY="old-1")
    old = timezone.now() - datetime.timedelta(hours=IdempotencyKey.KEEP_HOURS, minutes=1)
    IdempotencyKey.objects.filter(key="old-1").update(created_at=old)
    # A day later the key means a new request (even with another body: no 422).
    fresh = client.post(url(other.pk), {}, format="json", HTTP_IDEMPOTENCY_KEY="old-1")
    assert fresh.status_code == 202 and fresh.json()["pending"] == [other.pk]
    client.post(url(message.pk), {}, format="json", HTTP_IDEMPOTENCY_KEY="old-2")
    IdempotencyKey.objects.filter(key="old-2").update(created_at=old)
    assert spamhold_reconcile.outcomes()["keysPurged"] == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["old-1"]


# ------------------------------------------------------------------ the reconciler


def test_nothing_pending_costs_two_statements(django_assert_max_num_queries: Any) -> None:
    # One SELECT of due requests, one DELETE of expired keys (with its BEGIN/COMMIT).
    with django_assert_max_num_queries(4):
        assert spamhold_reconcile.outcomes() == {"redriven": [], "gaveUp": [], "keysPurged": 0}


def test_a_request_whose_worker_died_is_re_driven_with_a_new_job(
    cast: Cast, undispatched: list[int]
) -> None:
    message = held_on_node(cast, make_node(cast.ministry))
    report = actions.release(actor=cast.sub_admin, ids=[message.pk])
    first_job = Job.objects.get(pk=report.job)
    # Its worker took it, then died: the job says running, the lease is still fresh.
    Job.objects.filter(pk=first_job.pk).update(status=Job.RUNNING, heartbeat_at=timezone.now())
    OutcomeIntent.objects.filter(pk=report.intent).update(
        state=IntentState.APPLYING,
        lease_owner=first_job.pk,
        next_attempt_at=timezone.now() + datetime.timedelta(seconds=20),
    )
    assert spamhold_reconcile.outcomes()["redriven"] == []
    # The lease runs out (no heartbeat): a new job, the old one marked abandoned.
    OutcomeIntent.objects.filter(pk=report.intent).update(
        next_attempt_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    assert spamhold_reconcile.outcomes()["redriven"] == [report.intent]
    request = OutcomeIntent.objects.get(pk=report.intent)
    assert (request.state, request.attempts, request.lease_owner) == (
        IntentState.REQUESTED,
        2,
        None,
    )
    assert request.job_id != first_job.pk and undispatched == [first_job.pk, request.job_id]
    first_job.refresh_from_db()
    assert first_job.status == Job.FAILED and "continued by job" in first_job.error
    # Re-driven once: the next pass waits for the new job's lease or backoff.
    assert spamhold_reconcile.outcomes()["redriven"] == []


def test_a_node_that_stays_down_is_retried_then_given_up_with_the_reason(
    cast: Cast, settings
) -> None:
    settings.UMS_SSH_RETRIES = 0
    settings.UMS_SPAMHOLD_INTENT_MAX_ATTEMPTS = 2
    node = make_node(cast.ministry)
    Node.objects.filter(pk=node.pk).update(ssh_address="127.0.0.1", ssh_port=1)
    message = held_on_node(cast, node)
    report = actions.release(actor=cast.sub_admin, ids=[message.pk])  # runs in process
    request = OutcomeIntent.objects.get(pk=report.intent)
    assert request.state == IntentState.RETRYING and request.attempts == 1
    message.refresh_from_db()
    assert message.pending == "release" and message.node_error == request.error
    assert request.next_attempt_at > timezone.now()

    OutcomeIntent.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now())
    assert spamhold_reconcile.outcomes()["redriven"] == [request.pk]
    request.refresh_from_db()
    # The second attempt failed too and was the last: given up, the reason kept.
    assert request.state == IntentState.FAILED and request.attempts == 2
    assert request.error and request.finished_at
    message.refresh_from_db()
    assert (message.status, message.pending, message.handled_by_name) == (Status.ONHOLD, "", "")
    assert message.node_error == request.error
    assert Job.objects.get(pk=request.job_id).status == Job.FAILED
    failed = AuditRecord.objects.get(action="spamhold.request_failed")
    assert failed.changes["error"] == request.error and failed.changes["messages"] == 1
    assert AuditRecord.objects.filter(action="spamhold.release_failed").exists()
    # Back on hold: anyone may ask again.
    assert actions.release(actor=cast.root_admin, ids=[message.pk]).pending == [message.pk]


def test_a_request_never_picked_up_is_given_up_by_the_reconciler_after_the_cap(
    cast: Cast, undispatched: list[int], settings
) -> None:
    settings.UMS_SPAMHOLD_INTENT_MAX_ATTEMPTS = 3
    message = held_on_node(cast, make_node(cast.ministry))
    report = actions.release(actor=cast.sub_admin, ids=[message.pk])
    for expected in (2, 3):
        OutcomeIntent.objects.filter(pk=report.intent).update(next_attempt_at=timezone.now())
        assert spamhold_reconcile.outcomes()["redriven"] == [report.intent]
        assert OutcomeIntent.objects.get(pk=report.intent).attempts == expected
    OutcomeIntent.objects.filter(pk=report.intent).update(next_attempt_at=timezone.now())
    assert spamhold_reconcile.outcomes()["gaveUp"] == [report.intent]
    request = OutcomeIntent.objects.get(pk=report.intent)
    assert request.state == IntentState.FAILED and "3 attempts" in request.error
    message.refresh_from_db()
    assert message.pending == "" and "3 attempts" in message.node_error


def test_a_node_command_longer_than_the_lease_is_not_taken_for_a_dead_worker(
    cast: Cast, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's lease keeper renews the lease while a slow node works; only a dead
    worker's lease runs out. (The node is replaced by a slow stand-in here: the lease
    is under test, not the node.)"""
    import contextlib
    import time

    from spamhold import intents, nodeops

    settings.UMS_SPAMHOLD_INTENT_LEASE = 1
    message = held_on_node(cast, make_node(cast.ministry))
    seen: dict[str, Any] = {}

    def slow_node(conn: Any, operation: str, token: str, ids: list[str]) -> Any:
        time.sleep(3.5)  # more than three leases
        seen["redriven"] = spamhold_reconcile.outcomes()["redriven"]
        return nodeops.QueueChange(done=list(ids))

    monkeypatch.setattr(intents, "session", lambda node: contextlib.nullcontext(None))
    monkeypatch.setattr(nodeops, "apply_marked", slow_node)
    report = actions.release(actor=cast.sub_admin, ids=[message.pk])
    assert seen["redriven"] == []
    request = OutcomeIntent.objects.get(pk=report.intent)
    assert (request.state, request.attempts) == (IntentState.DONE, 1)
    message.refresh_from_db()
    assert message.status == Status.RELEASED
