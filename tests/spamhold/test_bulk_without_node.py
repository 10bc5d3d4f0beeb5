"""A filtered bulk request, and what happens to a message whose node is gone (no node
needed): nothing can carry it out, so the request gives it up at once with the reason."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from audit.models import AuditRecord
from spamhold import actions
from spamhold.models import HeldMessage, IntentState, Outcome, OutcomeIntent, Status
from tests.fixtures import Cast
from ums.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def held(cast: Cast, sender_domain: str) -> HeldMessage:
    now = timezone.now()
    return HeldMessage.objects.create(
        node=None,
        node_name="gone.example",
        queue_id=f"Q{sender_domain.replace('.', '')}",
        customer=cast.ministry,
        customer_path=cast.ministry.path,
        received_at=now,
        sender=f"x@{sender_domain}",
        sender_domain=sender_domain,
        expires_at=now + datetime.timedelta(days=30),
    )


def test_filtered_bulk_request_acts_on_matches_only_and_a_nodeless_one_is_given_up(
    cast: Cast,
) -> None:
    target, other = held(cast, "spam.test"), held(cast, "fine.test")
    job = actions.start_bulk(
        actor=cast.sub_admin, outcome=Outcome.DELETE, filters={"from_domain": "spam.test"}
    )
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    request = OutcomeIntent.objects.get(pk=job.params["intent"])
    assert request.state == IntentState.DONE and request.claimed_all
    assert job.result["counts"] == {"done": 0, "gone": 0, "onhold": 1, "pending": 0}
    assert [f["id"] for f in job.result["failed"]] == [target.pk]
    target.refresh_from_db()
    other.refresh_from_db()
    # Given up: on hold again, unclaimed, with the reason; retryable by anyone.
    assert (target.status, target.outcome, target.handled_by_name) == (Status.ONHOLD, "", "")
    assert "no longer exists" in target.node_error
    assert (other.status, other.node_error, other.outcome) == (Status.ONHOLD, "", "")
    assert AuditRecord.objects.filter(action="spamhold.delete_failed").exists()
    # Asked by id, a nodeless message is refused at once (nothing to request).
    report = actions.delete(actor=cast.sub_admin, ids=[target.pk])
    assert report.pending == [] and [f["id"] for f in report.failed] == [target.pk]
    # Out of scope for the sibling: not found, nothing claimed.
    report = actions.delete(actor=cast.sibling_admin, ids=[target.pk])
    assert report.not_found == [target.pk]
