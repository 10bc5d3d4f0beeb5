"""Accepting a changed host key (after a legitimate reinstall) brings the node back.

A real sshd test node regenerates its host key; the metric sweep refuses it and degrades
the node; an administrator accepts the new key through the API; the node is active again,
its alert resolved, and the next sweep talks to it.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from deploy import metrics
from servers.choices import NodeStatus
from servers.models import NodeAlert
from tests.fixtures import Cast, token_client
from tests.servers.test_nodes import approved

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


def test_accepting_the_new_key_ends_the_degraded_state(
    cast: Cast, zone, one_node, controller_key
) -> None:
    node = approved(cast, zone, one_node)
    assert node.status == NodeStatus.ACTIVE
    one_node.regenerate_host_key()
    assert metrics.sweep()["missed"] == 1
    node.refresh_from_db()
    assert node.status == NodeStatus.DEGRADED and node.host_key_alert
    response = token_client(cast.sub_admin).post(
        reverse("node-accept-host-key", args=[node.pk]),
        {"hostKey": one_node.host_key},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == NodeStatus.ACTIVE
    node.refresh_from_db()
    assert (node.status, node.host_key_alert) == (NodeStatus.ACTIVE, "")
    assert not NodeAlert.objects.filter(
        node=node, kind="host_key_mismatch", resolved_at=None
    ).exists()
    record = AuditRecord.objects.filter(action="node.host_key_accept").latest("seq")
    assert record.changes["before"]["status"] == NodeStatus.DEGRADED
    assert record.changes["after"]["status"] == NodeStatus.ACTIVE
    assert metrics.sweep()["collected"] == 1
