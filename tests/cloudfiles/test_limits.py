"""Cloud files in the subtree resource limits: counted, refused, held at provisioning."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from cloudfiles import actions, usage
from deploy import desired
from tenants import limit_actions
from tenants.limits import subtree_usage
from tests.api.test_servers_api import make_node
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox

pytestmark = pytest.mark.django_db
FILES = {"files": "allow"}


def test_usage_counts_the_cloud_quota_of_mailboxes_with_cloud_files(cast: Cast) -> None:
    domain = make_domain(cast.department, "department.example")
    make_mailbox(domain, "a", protocol_access=FILES, quota_mb=1000)
    make_mailbox(domain, "b", quota_mb=5000)  # no cloud files: not counted
    other = make_domain(cast.ministry, "ministry.example")
    make_mailbox(other, "c", protocol_access=FILES, quota_mb=300)
    got = subtree_usage([cast.government.path, cast.department.path])
    assert got[cast.government.path]["cloud_gb"] == 1300
    assert got[cast.department.path]["cloud_gb"] == 1000
    # The tree's cloud quota per user replaces the mailbox quota in the count.
    actions.update_files_policy(actor=cast.root_admin, customer=cast.ministry, quota_mb=200)
    assert usage.usage_provider([cast.government.path])[cast.government.path]["cloud_gb"] == 400
    # Turned on for a whole customer through its protocol access: b and d count now, at
    # the inherited cloud quota per user (200 MB each).
    make_mailbox(domain, "d", quota_mb=50)
    from mail import actions as mail_actions

    mail_actions.update_customer_policy(
        actor=cast.root_admin, customer=cast.department, protocol_access=FILES
    )
    assert usage.usage_provider([cast.department.path])[cast.department.path]["cloud_gb"] == 600


def test_limits_are_refused_below_usage_and_quota_raises_beyond_them(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    for name in ("a", "b"):
        make_mailbox(domain, name, protocol_access=FILES, quota_mb=1024)
    with pytest.raises(ValidationError) as caught:
        limit_actions.set_limits(actor=cast.root_admin, customer=cast.ministry, max_cloud_gb=1)
    assert "max_cloud_gb" in caught.value.message_dict
    limit_actions.set_limits(actor=cast.root_admin, customer=cast.ministry, max_cloud_gb=3)
    with pytest.raises(ValidationError) as caught:
        actions.update_files_policy(actor=cast.root_admin, customer=cast.ministry, quota_mb=2048)
    assert "quota_mb" in caught.value.message_dict
    actions.update_files_policy(actor=cast.root_admin, customer=cast.ministry, quota_mb=1500)
    client = token_client(cast.root_admin)
    body = client.get(reverse("mail-limit-detail", args=[cast.ministry.pk])).json()
    assert body["maxCloudGb"] == 3 and body["usage"]["cloudMb"] == 3000


def test_accounts_beyond_the_limit_get_none_and_are_reported(cast: Cast) -> None:
    node = make_node(cast.ministry)
    node.roles = ["cloudfiles"]
    node.save()
    domain = make_domain(cast.ministry, "ministry.example")
    for name in ("a", "b", "c"):
        make_mailbox(domain, name, protocol_access=FILES, quota_mb=1024)
    # Set while two fit: the third one is held back when the state is built.
    limit_actions.set_limits(actor=cast.root_admin, customer=cast.ministry, max_cloud_gb=3)
    limit_row = cast.ministry.resource_limit
    type(limit_row).objects.filter(pk=limit_row.pk).update(max_cloud_gb=2)
    data = desired.build(node).extra["nextcloud"]
    files = {a.uid: a.files for a in data.accounts}
    assert files == {
        "a@ministry.example": True,
        "b@ministry.example": True,
        "c@ministry.example": False,
    }
    assert data.over_limit == ["c@ministry.example"]
