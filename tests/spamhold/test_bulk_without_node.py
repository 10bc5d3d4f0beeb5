"""A filtered bulk job, and what happens to a message whose node is gone (no node needed)."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from spamhold import actions
from spamhold.models import HeldMessage, Outcome, Status
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


def test_filtered_bulk_job_acts_on_matches_only_and_a_failure_leaves_it_on_hold(
    cast: Cast,
) -> None:
    target, other = held(cast, "spam.test"), held(cast, "fine.test")
    job = actions.start_bulk(
        actor=cast.sub_admin, outcome=Outcome.DELETE, filters={"from_domain": "spam.test"}
    )
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    assert job.result["counts"]["failed"] == 1 and job.result["counts"]["done"] == 0
    assert [f["id"] for f in job.result["failed"]] == [target.pk]
    target.refresh_from_db()
    other.refresh_from_db()
    # The claim was rolled back: on hold again, with the reason, retryable.
    assert (target.status, target.outcome, target.handled_by_name) == (Status.ONHOLD, "", "")
    assert target.node_error
    assert (other.status, other.node_error) == (Status.ONHOLD, "")
    # Out of scope for the sibling: not found, nothing claimed.
    report = actions.delete(actor=cast.sibling_admin, ids=[target.pk])
    assert report.not_found == [target.pk]
