"""The cloud files policy inherits down the customer tree and reaches the desired state."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from audit.models import AuditRecord
from cloudfiles import actions, policy
from cloudfiles.state import add_nextcloud
from deploy import desired
from deploy.services.nextcloud.data import group_id
from tests.api.test_servers_api import make_node
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox

pytestmark = pytest.mark.django_db


def test_fields_inherit_from_the_nearest_level_that_sets_them(cast: Cast) -> None:
    actions.update_files_policy(
        actor=cast.root_admin, customer=cast.government, external_links=False, expire_days=30
    )
    actions.update_files_policy(actor=cast.root_admin, customer=cast.ministry, expire_days=7)
    got = policy.effective(cast.department)
    assert got["external_links"]["value"] is False
    assert got["external_links"]["source"]["id"] == cast.government.pk
    assert got["expire_days"]["value"] == 7
    assert got["expire_days"]["source"]["id"] == cast.ministry.pk
    assert got["password_required"] == {
        "value": False,
        "source": {"level": "default", "id": None, "name": ""},
    }
    assert policy.effective(cast.ministry, upto_parent=True)["expire_days"]["value"] == 30
    assert AuditRecord.objects.filter(action="files.policy.update").count() == 2


def test_bad_values_are_field_errors_all_at_once(cast: Cast) -> None:
    with pytest.raises(ValidationError) as caught:
        actions.update_files_policy(
            actor=cast.root_admin, customer=cast.ministry, expire_days=-1, external_links="yes"
        )
    assert set(caught.value.message_dict) == {"expire_days", "external_links"}
    client = token_client(cast.sub_admin)
    response = client.patch(
        reverse("files-policy-detail", args=[cast.ministry.pk]),
        {"expireDays": 99999, "quotaMb": -5},
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"expireDays", "quotaMb"}
    # Out of the administrator's subtree: 404.
    response = client.get(reverse("files-policy-detail", args=[cast.isp.pk]))
    assert response.status_code == 404


def test_a_cloud_node_state_has_accounts_groups_and_inherited_policy(cast: Cast) -> None:
    actions.update_files_policy(
        actor=cast.root_admin, customer=cast.government, external_links=False, quota_mb=500
    )
    node = make_node(cast.ministry)
    node.roles = ["cloudfiles"]
    node.save()
    domain = make_domain(cast.ministry, "ministry.example")
    make_mailbox(domain, "alice", protocol_access={"files": "allow"}, quota_mb=2000)
    make_mailbox(domain, "bob")
    state = desired.build(node)
    assert add_nextcloud in desired.STATE_BUILDERS
    data = state.extra["nextcloud"]
    by_uid = {a.uid: a for a in data.accounts}
    assert by_uid["alice@ministry.example"].files is True
    assert by_uid["alice@ministry.example"].quota_mb == 500  # the tree's cloud quota
    assert by_uid["bob@ministry.example"].files is False  # cloud files are off by default
    [group] = data.groups
    assert group.group == group_id(cast.ministry.pk) and group.external_links is False
