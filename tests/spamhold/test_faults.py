"""Held mail survives dead workers and dropped connections: every released message is
delivered exactly once and every row ends true, by itself.

Real parts only: the SMTP and IMAP nodes of the harness (Postfix, Courier, the Maildir),
a real Celery worker (prefork) and beat on the Redis broker (tests/harness/worker.py),
SIGKILL of the whole worker or of only its pool processes mid-release, and the node's
sshd killed right after ``postsuper`` ran. Nothing is repaired by hand: no manual retry,
no Redis key deleted, no row edited; the reconciler (beat) and ingestion heal it.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from contextlib import suppress
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from spamhold import actions, ingest, nodeops
from spamhold import reconcile as spamhold_reconcile
from spamhold.models import HeldMessage, IntentState, OutcomeIntent, Status
from tests.converge.test_mail_flow import DOMAIN, maildir
from tests.fixtures import token_client
from tests.harness.worker import celery_stack, wait_for

from .conftest import HoldBench

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

HOLD_CHECKS = "/etc/postfix/fault_hold_checks"
# Inside the node: $1 messages named "$2-<i>", each filed in the hold queue by cleanup.
INJECT = (
    'i=1; while [ "$i" -le "$1" ]; do '
    'printf "From: <spam@outside.test>\\nTo: <alice@%s>\\nSubject: %s-%d\\n'
    'X-UMS-Hold: spam; score=9.5; rules=TEST_RULE\\n\\nbody %s-%d\\n" '
    '"$3" "$2" "$i" "$2" "$i" | /usr/sbin/sendmail -i -f spam@outside.test -- "alice@$3" '
    "|| exit 1; i=$((i + 1)); done"
)
# Seconds a release job holds its request in the worker: short, so a dead worker's
# request is re-driven quickly (production default: 20).
LEASE = "6"
BOUND = 90.0


def hold_count(bench: HoldBench) -> int:
    folder = bench.smtp.path("/var/spool/postfix/hold")
    return sum(1 for _entry in folder.iterdir()) if folder.is_dir() else 0


def seed(bench: HoldBench, prefix: str, count: int) -> list[int]:
    """``count`` messages in the SMTP node's hold queue, ingested; their row ids.

    Cleanup files them in the hold queue itself (a HOLD header check) while sendmail
    injects them; the node's converged main.cf is restored before returning.
    """
    smtp = bench.smtp
    before = hold_count(bench)
    main_cf = smtp.path("/etc/postfix/main.cf")
    original = main_cf.read_bytes()
    smtp.path(HOLD_CHECKS).write_text("/^X-UMS-Hold:/ HOLD\n")
    smtp.exec_in_node(
        ["postconf", "-e", f"header_checks = regexp:{HOLD_CHECKS}", "non_smtpd_milters ="]
    )
    smtp.exec_in_node(["script", "-qec", "postfix reload", "/dev/null"])
    try:
        smtp.exec_in_node(["sh", "-c", INJECT, "sh", str(count), prefix, DOMAIN], timeout=300)
        wait_for(
            lambda: hold_count(bench) - before >= count,
            timeout=120,
            what=f"{count} messages on hold",
        )
    finally:
        main_cf.write_bytes(original)
        smtp.exec_in_node(["script", "-qec", "postfix reload", "/dev/null"])
    assert ingest.ingest_node(bench.nodes.smtp_node).new == count
    rows = HeldMessage.objects.filter(subject__startswith=f"{prefix}-", status=Status.ONHOLD)
    ids = list(rows.values_list("pk", flat=True))
    assert len(ids) == count
    return ids


def deliveries(bench: HoldBench, prefix: str) -> Counter:
    """How many times each ``prefix-<i>`` subject arrived in alice's Maildir."""
    seen: Counter = Counter()
    folder = maildir(bench.nodes, "alice")
    if not folder.is_dir():
        return seen
    for item in folder.iterdir():
        with suppress(FileNotFoundError):
            for line in item.read_text(errors="replace").splitlines():
                if line.startswith(f"Subject: {prefix}-"):
                    seen[line[len("Subject: ") :].strip()] += 1
                    break
                if not line:
                    break
    return seen


def assert_released_once(bench: HoldBench, prefix: str, ids: list[int]) -> None:
    """Within the bound: every row RELEASED, none of them held, each delivered once."""
    count = len(ids)
    queue_ids = set(HeldMessage.objects.filter(pk__in=ids).values_list("queue_id", flat=True))

    def healed() -> bool:
        released = HeldMessage.objects.filter(pk__in=ids, status=Status.RELEASED).count()
        return released == count and len(deliveries(bench, prefix)) == count

    try:
        wait_for(healed, timeout=BOUND, interval=1.0, what=f"{count} released and delivered")
    except AssertionError:
        states = Counter(
            HeldMessage.objects.filter(pk__in=ids).values_list("status", "outcome", "node_error")
        )
        requests = list(OutcomeIntent.objects.values("pk", "state", "attempts", "error"))
        raise AssertionError(
            f"rows {states}; requests {requests}; delivered {len(deliveries(bench, prefix))}"
        ) from None
    # Give a duplicate the time to show up before counting.
    time.sleep(3)
    arrived = deliveries(bench, prefix)
    assert len(arrived) == count and set(arrived.values()) == {1}, arrived.most_common(3)
    assert not queue_ids & {e.queue_id for e in nodeops_hold(bench)}
    assert not HeldMessage.objects.filter(pk__in=ids, status=Status.GONE).exists()


def nodeops_hold(bench: HoldBench) -> list[Any]:
    out = bench.smtp.exec_in_node(["postqueue", "-j"], check=False).stdout
    return nodeops.parse_postqueue_json(out)


def release_and_wait_for_postsuper(bench: HoldBench, ids: list[int]) -> OutcomeIntent:
    """Ask for the release through the action layer, then return as soon as the node has
    started moving the messages out of hold (the moment to kill the worker)."""
    before = hold_count(bench)
    report = actions.release(actor=bench.cast.sub_admin, ids=ids)
    assert report.pending == ids
    wait_for(lambda: hold_count(bench) < before, timeout=60, interval=0.02, what="postsuper")
    return OutcomeIntent.objects.get(pk=report.intent)


def test_released_mail_is_delivered_once_whatever_part_of_the_worker_dies(
    bench: HoldBench, tmp_path
) -> None:
    api_ids = seed(bench, "fault-api", 1)
    whole_ids = seed(bench, "fault-kill", 300)
    pool_ids = seed(bench, "fault-pool", 300)
    env = {"UMS_SPAMHOLD_INTENT_LEASE": LEASE}
    with celery_stack(tmp_path, env=env) as (worker, _beat):
        # One message through the API: answered before the node acts, pending meanwhile.
        client = token_client(bench.cast.sub_admin)
        answer = client.post(
            reverse("spamhold-message-release-one", args=[api_ids[0]]), {}, format="json"
        )
        assert answer.status_code == 202, answer.content
        body = answer.json()
        assert body["pending"] == api_ids and body["result"]["status"] == "ONHOLD"
        assert body["result"]["pending"] == "release"
        assert_released_once(bench, "fault-api", api_ids)

        # The whole worker SIGKILLed mid-release, restarted as systemd would.
        killed_at = release_and_wait_for_postsuper(bench, whole_ids)
        worker.kill()
        caught = HeldMessage.objects.filter(pk__in=whole_ids, status=Status.RELEASED).count()
        worker.start()
        assert_released_once(bench, "fault-kill", whole_ids)
        request = OutcomeIntent.objects.get(pk=killed_at.pk)
        assert request.state == IntentState.DONE, request.error
        print(f"whole worker killed with {caught}/300 rows settled; {request.attempts} attempts")

        # Only the pool processes SIGKILLed (the OOM killer): the main process lives on.
        pool_request = release_and_wait_for_postsuper(bench, pool_ids)
        assert worker.kill_pool()
        caught = HeldMessage.objects.filter(pk__in=pool_ids, status=Status.RELEASED).count()
        assert_released_once(bench, "fault-pool", pool_ids)
        pool_request.refresh_from_db()
        assert pool_request.state == IntentState.DONE, pool_request.error
        print(f"pool killed with {caught}/300 rows settled; {pool_request.attempts} attempts")
        assert worker.alive


def kill_sshd(tnode: Any) -> None:
    """SIGKILL every sshd process of the node (listener and sessions): the controller's
    connection drops; Postfix and everything else in the node keep running."""
    for pid in tnode.processes():
        with suppress(OSError):
            with open(f"/proc/{pid}/comm") as handle:
                if handle.read().strip() != "sshd":
                    continue
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not tnode.running, timeout=10, what="sshd gone")


def test_a_connection_cut_after_postsuper_ends_released_not_gone(
    bench: HoldBench, monkeypatch: pytest.MonkeyPatch, settings
) -> None:
    settings.UMS_SSH_RETRIES = 0
    first = seed(bench, "cut-ingest", 2)
    second = seed(bench, "cut-retry", 2)
    real_act = nodeops._act

    def act_then_lose_the_node(conn, flag, token, ids):
        result = real_act(conn, flag, token, ids)
        kill_sshd(bench.smtp)  # postsuper ran; the answer to what comes next is lost
        return result

    for ids in (first, second):
        monkeypatch.setattr(nodeops, "_act", act_then_lose_the_node)
        report = actions.release(actor=bench.cast.sub_admin, ids=ids)
        monkeypatch.setattr(nodeops, "_act", real_act)
        request = OutcomeIntent.objects.get(pk=report.intent)
        # The job lost the node before it could confirm: still pending, with the reason,
        # though the messages have left the hold queue.
        assert request.state == IntentState.RETRYING, request.error
        rows = HeldMessage.objects.filter(pk__in=ids)
        assert {(r.status, r.outcome) for r in rows} == {(Status.ONHOLD, "release")}
        assert all(r.node_error for r in rows)
        assert not {r.queue_id for r in rows} & {e.queue_id for e in nodeops_hold(bench)}
        bench.smtp.start()  # sshd back

    # Ingestion finds the first pair gone from the queue with our marker: RELEASED.
    result = ingest.ingest_node(bench.nodes.smtp_node)
    assert result.gone == 0
    assert set(HeldMessage.objects.filter(pk__in=first).values_list("status", flat=True)) == {
        Status.RELEASED
    }
    # The second request's retry (the reconciler, when due) finds the same: RELEASED.
    OutcomeIntent.objects.update(next_attempt_at=timezone.now())
    redriven = spamhold_reconcile.outcomes()["redriven"]
    assert len(redriven) == 2
    for request in OutcomeIntent.objects.all():
        assert request.state == IntentState.DONE and request.attempts == 2
    assert_released_once(bench, "cut-ingest", first)
    assert_released_once(bench, "cut-retry", second)
