"""The compiled-SQL store of list pages (``ums.api.compiled``): the same rows as the ORM,
one entry per distinct query (scope, cursor, page size), and nothing about the caller
kept: a revoked token or a removed permission still takes effect on the next request."""

from __future__ import annotations

import pytest
from django.urls import reverse

from mail.models import Mailbox
from tenants import actions
from tenants import permissions as perms
from tenants.models import Administrator
from tests.api.test_tokens_api import bearer
from tests.fixtures import Cast
from tests.mail.helpers import make_domain, make_mailbox
from ums.api import compiled

pytestmark = pytest.mark.django_db


def emails(client, url: str) -> list[str]:
    response = client.get(url)
    assert response.status_code == 200, response.content
    return [row["email"] for row in response.json()["results"]]


@pytest.fixture
def mailboxes(cast: Cast) -> None:
    compiled._cache.clear()
    for customer, name in ((cast.ministry, "ministry"), (cast.shop, "shop")):
        domain = make_domain(customer, f"{name}.example")
        for n in range(3):
            make_mailbox(domain, f"user{n}")


def test_each_scope_gets_its_own_rows(cast: Cast, mailboxes: None) -> None:
    url = reverse("mail-mailbox-list")
    _token, root_secret = actions.create_token(actor=cast.root_admin, name="root")
    _token, sub_secret = actions.create_token(actor=cast.sub_admin, name="sub")
    root, sub = bearer(root_secret), bearer(sub_secret)
    everything = sorted(Mailbox.objects.values_list("email", flat=True))
    mine = sorted(
        Mailbox.objects.filter(customer_path__startswith=cast.sub_admin.customer.path)
        .values_list("email", flat=True)
    )  # fmt: skip
    assert mine and len(mine) < len(everything)
    for _ in range(2):  # the second round runs from the stored SQL
        assert sorted(emails(root, url)) == everything
        assert sorted(emails(sub, url)) == mine
    assert len(compiled._cache) >= 2 and all(
        v is not compiled._UNKEPT for v in compiled._cache.values()
    )


def test_pages_walked_from_stored_sql_match_the_orm(cast: Cast, mailboxes: None) -> None:
    _token, secret = actions.create_token(actor=cast.root_admin, name="root")
    client = bearer(secret)
    url, seen = reverse("mail-mailbox-list") + "?pageSize=2", []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        seen += [row["email"] for row in response.json()["results"]]
        url = response.json()["next"]
    assert seen == list(
        Mailbox.objects.order_by("customer_path", "email").values_list("email", flat=True)
    )


def test_values_rows_equal_the_orm_and_joins_are_not_kept(cast: Cast, mailboxes: None) -> None:
    plain = Mailbox.objects.filter(customer_path__startswith="/").values("id", "email")[:10]
    assert compiled.values_rows(plain) == list(plain)
    assert compiled._key(plain) in compiled._cache
    joined = Mailbox.objects.filter(domain__name="shop.example").values("id", "email")[:10]
    assert compiled._key(joined) is None
    assert compiled.values_rows(joined) == list(joined)
    # 1 and True compare equal in Python: they never share an entry (the value's type is
    # in the key, when such a query is kept at all).
    one = compiled._key(Mailbox.objects.filter(quota_mb=1).values("id"))
    true = compiled._key(Mailbox.objects.filter(quota_mb=True).values("id"))
    assert one is None or one != true


def test_revoked_token_and_removed_permission_on_the_stored_page(
    cast: Cast, mailboxes: None
) -> None:
    url = reverse("mail-mailbox-list")
    token, secret = actions.create_token(actor=cast.sub_admin, name="fresh")
    client = bearer(secret)
    emails(client, url)
    emails(client, url)
    remaining = [p for p in cast.sub_admin.permissions if p != perms.MAIL_VIEW]
    Administrator.objects.filter(pk=cast.sub_admin.pk).update(permissions=remaining)
    assert client.get(url).status_code == 403
    Administrator.objects.filter(pk=cast.sub_admin.pk).update(permissions=perms.ALL)
    emails(client, url)
    actions.revoke_token(actor=cast.sub_admin, token=token)
    assert client.get(url).status_code == 401
