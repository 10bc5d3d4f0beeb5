"""The post-write scope re-check (``ums.actions.recheck_in_scope``), written as one kept
statement per model (issue 19): it still reads the row as stored and answers 404 for a
row outside the actor's subtree, so the action rolls back."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.http import Http404

from mail.models import Mailbox
from tests.fixtures import Cast
from tests.mail.helpers import make_domain, make_mailbox
from ums.actions import recheck_in_scope


def test_a_row_outside_the_actors_subtree_is_refused_and_rolled_back(cast: Cast) -> None:
    mailbox = make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")
    recheck_in_scope(mailbox, cast.sub_admin)  # the ministry is below the government
    with pytest.raises(Http404):
        recheck_in_scope(mailbox, cast.sibling_admin)

    # What counts is the row as stored, not the object in memory.
    with pytest.raises(Http404), transaction.atomic():
        Mailbox.objects.filter(pk=mailbox.pk).update(customer_path=cast.isp.path)
        recheck_in_scope(mailbox, cast.sub_admin)
    assert Mailbox.objects.get(pk=mailbox.pk).customer_path == cast.ministry.path


def test_a_sibling_path_sharing_digits_is_not_inside(cast: Cast) -> None:
    """``/1/2/`` does not contain ``/1/23/``: the prefix ends with the separator."""
    mailbox = make_mailbox(make_domain(cast.ministry, "ministry.example"), "bob")
    Mailbox.objects.filter(pk=mailbox.pk).update(
        customer_path=cast.sub_admin.customer_path[:-1] + "9/"
    )
    with pytest.raises(Http404):
        recheck_in_scope(mailbox, cast.sub_admin)
