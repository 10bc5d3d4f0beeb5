"""Held mail on real Postfix nodes: ingestion, one outcome per message, expiry, content.

The messages are put on hold by the test itself (see conftest: holding mail is the
content filter's job and is tested with the filter); everything here acts on the SMTP
node's real hold queue and checks the node and the IMAP node's Maildir.
"""

from __future__ import annotations

import datetime
import threading

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.utils import timezone

from spamhold import actions, content, ingest, nodeops
from spamhold import reconcile as spamhold_reconcile
from spamhold.models import HeldMessage, IntentState, Outcome, OutcomeIntent, Reason, Status
from tenants import permissions as perms
from tests.converge.test_mail_flow import DOMAIN
from tests.fixtures import make_admin
from ums.models import Job

from .conftest import HoldBench, node_queue

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

SPAM = "spam; score=9.5; rules=TEST_RULE"


def held_ids(bench: HoldBench) -> set[str]:
    return {e["queue_id"] for e in node_queue(bench.smtp)}


def test_ingestion_records_each_held_message_once_and_notices_ones_removed_by_hand(
    bench: HoldBench,
) -> None:
    ids = bench.hold(
        [
            {"subject": "marker-spam", "hold_header": SPAM},
            {"subject": "marker-virus", "hold_header": "virus; virus=Eicar-Test-Signature"},
            {"subject": "marker-plain"},
        ]
    )
    node = bench.nodes.smtp_node
    first = ingest.ingest_node(node)
    second = ingest.ingest_node(node)
    assert (first.in_queue, first.new) == (3, 3)
    assert (second.in_queue, second.new, second.gone) == (3, 0, 0)
    rows = {m.subject: m for m in HeldMessage.objects.all()}
    assert set(rows) == {"marker-spam", "marker-virus", "marker-plain"}
    spam = rows["marker-spam"]
    assert spam.queue_id == ids["marker-spam"]
    assert (spam.reason, str(spam.spam_score), spam.spam_rules) == (
        Reason.SPAM,
        "9.50",
        ["TEST_RULE"],
    )
    assert rows["marker-virus"].virus_name == "Eicar-Test-Signature"
    assert rows["marker-plain"].reason == Reason.OTHER
    assert spam.sender == "spammer@outside.test"
    assert spam.sender_domain == "outside.test"
    assert (spam.recipient, spam.recipient_domain) == (f"alice@{DOMAIN}", DOMAIN)
    assert spam.customer.name == "Converge Customer"
    assert spam.customer_path == spam.customer.path
    assert spam.status == Status.ONHOLD
    assert spam.expires_at - spam.received_at == datetime.timedelta(days=30)

    # An operator deletes one on the node by hand: the next ingest marks it GONE.
    bench.smtp.exec_in_node(["postsuper", "-d", ids["marker-plain"], "hold"])
    third = ingest.ingest_node(node)
    assert (third.in_queue, third.new, third.gone) == (2, 0, 1)
    assert HeldMessage.objects.get(subject="marker-plain").status == Status.GONE
    assert HeldMessage.objects.count() == 3


def test_release_delivers_once_and_a_concurrent_release_is_told_who_did_it(
    bench: HoldBench,
) -> None:
    ids = bench.hold(
        [
            {"subject": "marker-race", "hold_header": SPAM},
            {"subject": "marker-delete", "hold_header": SPAM},
        ]
    )
    ingest.ingest_node(bench.nodes.smtp_node)
    race = HeldMessage.objects.get(subject="marker-race")
    cast = bench.cast
    admins = [cast.sub_admin, cast.root_admin]
    reports: dict[str, object] = {}
    barrier = threading.Barrier(len(admins))

    def act(admin) -> None:
        try:
            barrier.wait(timeout=30)
            reports[admin.username] = actions.release(actor=admin, ids=[race.pk])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=act, args=(a,)) for a in admins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(reports) == 2
    winners = [name for name, r in reports.items() if r.pending == [race.pk]]
    losers = [name for name, r in reports.items() if r.already]
    assert len(winners) == 1 and len(losers) == 1, reports
    already = reports[losers[0]].already[0]
    winner = next(a for a in admins if a.username == winners[0])
    assert already["id"] == race.pk
    # The winner's request: still pending (the node has not confirmed) or released.
    assert (already["status"], already["pending"]) in (
        (Status.ONHOLD, True),
        (Status.RELEASED, False),
    )
    assert already["handledBy"] == winner.audit_name
    assert already["handledAt"]

    bench.wait_delivered("marker-race")
    race.refresh_from_db()
    assert (race.status, race.outcome, race.handled_by_id) == (
        Status.RELEASED,
        Outcome.RELEASE,
        winner.pk,
    )
    assert ids["marker-race"] not in held_ids(bench)
    # Releasing again changes nothing and says so.
    again = actions.release(actor=cast.sub_admin, ids=[race.pk])
    assert again.pending == [] and again.already[0]["status"] == Status.RELEASED
    assert bench.deliveries("marker-race") == 1
    # Our marker on the node names the released id under the request's token.
    request = race.intent
    marks = bench.smtp.path(f"{nodeops.MARKS_DIR}/{request.token}").read_text().split()
    assert marks == [ids["marker-race"]]
    assert request.state == IntentState.DONE

    # Delete: gone from the node's queue, never delivered.
    doomed = HeldMessage.objects.get(subject="marker-delete")
    report = actions.delete(actor=cast.sub_admin, ids=[doomed.pk])
    assert report.pending == [doomed.pk]
    assert ids["marker-delete"] not in {e["queue_id"] for e in node_queue(bench.smtp, None)}
    doomed.refresh_from_db()
    assert (doomed.status, doomed.handled_by_name) == (Status.DELETED, cast.sub_admin.audit_name)
    assert not bench.delivered("marker-delete")


def test_scope_permissions_content_and_expiry(bench: HoldBench) -> None:
    ids = bench.hold(
        [
            {
                "subject": "marker-content",
                "hold_header": SPAM,
                "body": "Dear alice, <script>alert(1)</script> buy now\n",
            },
            {"subject": "marker-expire", "hold_header": SPAM},
        ]
    )
    ingest.ingest_node(bench.nodes.smtp_node)
    cast = bench.cast
    message = HeldMessage.objects.get(subject="marker-content")

    # A sibling administrator does not see it; one without the permission may not act.
    outside = actions.release(actor=cast.sibling_admin, ids=[message.pk])
    assert outside.not_found == [message.pk] and outside.done == []
    with pytest.raises(PermissionDenied):
        actions.delete(actor=cast.ministry_viewer, ids=[message.pk])
    metadata_only = make_admin(
        cast.government, "hold.viewer", [perms.SPAMHOLD_VIEW, perms.SPAMHOLD_RELEASE]
    )
    with pytest.raises(PermissionDenied):
        content.read(actor=metadata_only, message=message)
    assert ids["marker-content"] in held_ids(bench)
    assert HeldMessage.objects.get(pk=message.pk).status == Status.ONHOLD

    found = content.read(actor=cast.sub_admin, message=message)
    assert ("Subject", "marker-content") in found.headers
    assert ("X-UMS-Hold", SPAM) in found.headers
    assert "buy now" in found.text
    assert not found.truncated
    log = content.receipt_log(message)
    assert any(ids["marker-content"] in line and "client=" in line for line in log), log

    # Retention: a customer's setting moves the expiry of what it holds; the expiry task
    # deletes what is due from the node.
    expiring = HeldMessage.objects.get(subject="marker-expire")
    actions.set_retention(actor=cast.sub_admin, customer=cast.government, days=2)
    expiring.refresh_from_db()
    assert expiring.expires_at - expiring.received_at == datetime.timedelta(days=2)
    counts = actions.expire_due(now=timezone.now() + datetime.timedelta(days=3))
    assert counts["pending"] == 2
    expiring.refresh_from_db()
    assert (expiring.status, expiring.outcome, expiring.handled_by_name) == (
        Status.EXPIRED,
        Outcome.EXPIRE,
        "system",
    )
    assert held_ids(bench) & {ids["marker-expire"], ids["marker-content"]} == set()
    assert not bench.delivered("marker-expire")


def test_a_failed_node_command_keeps_the_message_on_hold_for_a_retry_and_bulk_finishes_it(
    bench: HoldBench, settings
) -> None:
    ids = bench.hold([{"subject": f"marker-bulk-{i}", "hold_header": SPAM} for i in range(3)])
    ingest.ingest_node(bench.nodes.smtp_node)
    cast = bench.cast
    pks = sorted(HeldMessage.objects.values_list("pk", flat=True))
    node = bench.nodes.smtp_node
    real_port = node.ssh_port
    settings.UMS_SSH_RETRIES = 0
    type(node).objects.filter(pk=node.pk).update(ssh_port=1)  # nothing listens there
    report = actions.release(actor=cast.sub_admin, ids=pks[:1])
    assert report.pending == pks[:1]
    # The node could not be reached: the request waits for a retry, the message stays
    # pending with the reason shown, and nothing left the node.
    row = HeldMessage.objects.get(pk=pks[0])
    assert (row.status, row.outcome, row.handled_by_name) == (
        Status.ONHOLD,
        Outcome.RELEASE,
        cast.sub_admin.audit_name,
    )
    assert "Connect" in row.node_error or "refused" in row.node_error, row.node_error
    request = OutcomeIntent.objects.get(pk=report.intent)
    assert request.state == IntentState.RETRYING and request.error
    assert held_ids(bench) == set(ids.values())
    # Another administrator is told it is already asked for, by whom.
    other = actions.release(actor=cast.root_admin, ids=pks[:1])
    assert other.pending == [] and other.already[0]["pending"] is True

    # The node is back; the reconciler re-drives the request once its retry is due.
    type(node).objects.filter(pk=node.pk).update(ssh_port=real_port)
    assert spamhold_reconcile.outcomes()["redriven"] == []  # not due yet
    OutcomeIntent.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now())
    assert spamhold_reconcile.outcomes()["redriven"] == [request.pk]
    request.refresh_from_db()
    assert request.state == IntentState.DONE and request.attempts == 2
    # The released message is the one with the lowest row id, whichever marker it carries
    # (ingestion's order is the queue's, not the order the messages were sent in).
    bench.wait_delivered(HeldMessage.objects.get(pk=pks[0]).subject)

    job = actions.start_bulk(actor=cast.sub_admin, outcome=Outcome.RELEASE, ids=pks)
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    assert job.result["counts"]["done"] == 2
    assert (job.progress_done, job.progress_total) == (2, 2)
    for i in range(3):
        bench.wait_delivered(f"marker-bulk-{i}")
    assert set(HeldMessage.objects.values_list("status", flat=True)) == {Status.RELEASED}
    assert held_ids(bench) == set()
    assert all(bench.deliveries(f"marker-bulk-{i}") == 1 for i in range(3))
