"""Concurrent creates at the limit: exactly as many succeed as the licence allows."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from licensing import actions
from mail.models import Mailbox
from tests.fixtures import build_cast
from tests.licensing.conftest import make_licence
from tests.mail.helpers import make_domain, make_mailbox


@pytest.mark.django_db(transaction=True)
def test_two_creates_for_the_last_place_one_wins() -> None:
    cast = build_cast()
    # Two domains of two customers: no shared domain row or limit row serialises them.
    first = make_domain(cast.ministry, "ministry.example")
    second = make_domain(cast.shop, "shop.example")
    make_mailbox(first, "anna")
    actions.install_licence(actor=None, text=make_licence(model="users", limit=2))
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def create(domain, local: str) -> None:
        try:
            barrier.wait(timeout=10)
            make_mailbox(domain, local)
            outcomes.append("created")
        except ValidationError as exc:
            outcomes.append("refused" if "licence" in exc.message_dict else repr(exc))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=create, args=(first, "ben")),
        threading.Thread(target=create, args=(second, "carl")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["created", "refused"]
    assert Mailbox.objects.count() == 2
