"""The filter backend skips building a filterset only when no query parameter names a
filter (issue 19): the answer is then exactly the unfiltered list, and a parameter that
does name one still filters and is still validated."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox

pytestmark = pytest.mark.django_db

URL = "/api/v1/mail/mailboxes/"


def emails(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["email"] for row in response.json()["results"]]


def test_no_filter_asked_is_the_whole_scoped_list_and_named_filters_still_apply(
    cast: Cast,
) -> None:
    ministry = make_domain(cast.ministry, "ministry.example")
    make_mailbox(ministry, "alice")
    make_mailbox(ministry, "bob", is_enabled=False)
    make_mailbox(make_domain(cast.shop, "shop.example"), "outside")
    client = token_client(cast.sub_admin)
    everything = emails(client.get(URL, {"pageSize": 50, "unrelated": "x"}))
    assert everything == ["alice@ministry.example", "bob@ministry.example"]
    assert emails(client.get(URL, {"isEnabled": "false"})) == ["bob@ministry.example"]
    assert emails(client.get(URL, {"search": "ali"})) == ["alice@ministry.example"]
    assert emails(client.get(URL, {"subtreeOf": cast.department.pk})) == []
    refused = client.get(URL, {"subtreeOf": "not-a-number"})
    assert refused.status_code == 400, refused.content


def test_audit_time_filters_are_still_validated(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    refused = client.get("/api/v1/audit/", {"since": "not a time"})
    assert refused.status_code == 400, refused.content
