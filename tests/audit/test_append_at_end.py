"""Audit records written inside an action are appended as its last step (issue 19: the
chain head is then locked for the append and the commit only), and only for what the
action really did."""

from __future__ import annotations

import contextlib

import pytest
from django.db import transaction

from audit.models import AuditChainHead, AuditRecord
from audit.verify import verify
from ums import auditing
from ums.actions import action

pytestmark = pytest.mark.django_db


@action
def _noted(*, actor: object, name: str, fail: bool = False) -> int:
    auditing.record("test.noted", object_type="test", object_id=name, object_repr=name)
    # Not appended yet: the chain head is untouched until the action's work is done.
    seen = AuditRecord.objects.filter(object_id=name).count()
    if fail:
        raise ValueError(name)
    return seen


@action
def _outer(*, actor: object) -> None:
    auditing.record("test.noted", object_type="test", object_id="outer", object_repr="outer")
    _noted(actor=actor, name="inner-ok")
    with contextlib.suppress(ValueError):
        _noted(actor=actor, name="inner-failed", fail=True)


def test_a_record_is_appended_when_the_action_ends() -> None:
    assert _noted(actor=None, name="one") == 0
    assert AuditRecord.objects.filter(object_id="one").count() == 1


def test_a_nested_action_that_failed_leaves_no_record_and_the_rest_keep_their_order() -> None:
    _outer(actor=None)
    names = list(
        AuditRecord.objects.filter(action="test.noted")
        .order_by("seq")
        .values_list("object_id", flat=True)
    )
    assert names == ["outer", "inner-ok"]
    assert verify().finding is None


def test_an_action_that_failed_leaves_no_record_and_no_number_used() -> None:
    head = AuditChainHead.objects.first()
    before = head.last_seq if head else 0
    with pytest.raises(ValueError):
        _noted(actor=None, name="failed", fail=True)
    assert not AuditRecord.objects.filter(object_id="failed").exists()
    head = AuditChainHead.objects.first()
    assert (head.last_seq if head else 0) == before


def test_outside_an_action_a_record_is_appended_at_once() -> None:
    with transaction.atomic():
        auditing.record("test.noted", object_type="test", object_id="now", object_repr="now")
        assert AuditRecord.objects.filter(object_id="now").count() == 1
