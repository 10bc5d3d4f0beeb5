"""Per mail store settings: checked against what the node's ZFS supports (every error at
once), audited, rendered into the node's desired state over UMS_NODE_SETTINGS with the
node's desired generation bumped (so the reconciler converges it), the store's snapshot
override used by the scheduler, API and portal scoped (404 outside)."""

from __future__ import annotations

import subprocess

import pytest
from django.core.exceptions import ValidationError
from django.http import Http404

from audit.models import AuditRecord
from backup import actions, tasks
from backup.store_settings import COMMON_COMPRESSION, effective_for_domain, set_store_settings
from deploy import desired
from deploy.models import DomainPlacement, NodeConvergeState
from deploy.node_settings import problems
from servers.models import Node
from tests.api.contracts import COVERED
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain
from tests.services.zfs.test_zfs import pool  # noqa: F401  (the shared pool fixture)
from ums.models import Job

from .test_portal import portal
from .test_snapshots import _imap_node, at

pytestmark = pytest.mark.django_db
COVERED.add("mailstoresettings")  # outsider 404 tested in test_api_and_portal


def _generation(node: Node) -> int:
    state = NodeConvergeState.objects.filter(node=node).first()
    return state.desired_generation if state else 0


def test_values_checked_against_the_node_every_error_at_once(cast: Cast) -> None:
    node = _imap_node(cast)
    Node.objects.filter(pk=node.pk).update(memory_mb=8192)
    node.refresh_from_db()
    with pytest.raises(ValidationError) as caught:
        set_store_settings(
            actor=cast.sub_admin, node=node, compression="lz4", dedup="on", hourly_keep=10**6
        )
    errors = caught.value.message_dict
    assert set(errors) == {"compression", "dedup", "hourly_keep"}
    assert "zfs-fuse" not in errors["compression"][0] and "gzip-9" in errors["compression"][0]
    assert "256 GB" in errors["dedup"][0] and "8.0 GB" in errors["dedup"][0]
    with pytest.raises(ValidationError):
        set_store_settings(actor=cast.sub_admin, node=node, dedup="sometimes")

    # OpenZFS knows lz4 and zstd; dedup "on" passes where the memory is unknown.
    Node.objects.filter(pk=node.pk).update(storage_service="zfs", memory_mb=0)
    node.refresh_from_db()
    set_store_settings(actor=cast.sub_admin, node=node, compression="zstd-3", dedup="on")
    row = set_store_settings(actor=cast.sub_admin, node=node, compression="gzip-6")
    assert row.compression == "gzip"  # what ZFS reports for it, so converge stays idempotent

    smtp = Node.objects.create(
        customer=cast.government,
        customer_path=cast.government.path,
        zone=node.zone,
        hostname="smtp9.example.org",
        ssh_address="192.0.2.31",
        roles=["smtp"],
    )
    with pytest.raises(ValidationError) as caught:
        set_store_settings(actor=cast.sub_admin, node=smtp, compression="gzip")
    assert "IMAP" in str(caught.value)
    with pytest.raises(Http404):
        set_store_settings(actor=cast.sibling_admin, node=node, compression="gzip")


def test_settings_reach_the_desired_state_and_mark_the_node(
    cast: Cast, django_capture_on_commit_callbacks
) -> None:
    node = _imap_node(cast)
    before = _generation(node)
    assert desired.build(node).settings.get("mail_store_compression") is None
    with django_capture_on_commit_callbacks(execute=True):
        set_store_settings(actor=cast.sub_admin, node=node, compression="gzip-9", dedup="off")
    assert _generation(node) == before + 1
    settings_ = desired.build(node).settings
    assert settings_["mail_store_compression"] == "gzip-9"
    assert settings_["mail_store_dedup"] == "off"
    assert problems(settings_) == []  # what every converge checks first
    assert Job.objects.filter(kind="node.converge", object_id=str(node.pk)).exists()

    # Only the snapshot fields: nothing for the node to converge.
    set_store_settings(actor=cast.sub_admin, node=node, hourly_keep=0)
    assert _generation(node) == before + 1
    # Back to the global setting.
    set_store_settings(actor=cast.sub_admin, node=node, compression="")
    assert _generation(node) == before + 2
    assert "mail_store_compression" not in desired.build(node).settings

    records = AuditRecord.objects.filter(action="mail_store.update").order_by("pk")
    assert [r.changes["after"] for r in records] == [
        {"compression": "gzip-9", "dedup": "off"},
        {"hourly_keep": 0},
        {"compression": ""},
    ]
    assert records[0].object_repr == node.hostname


def test_store_snapshot_override_wins_over_the_customers(cast: Cast, settings) -> None:
    settings.UMS_CONVERGE = {"mail_store_pool": "tank"}
    node = _imap_node(cast)
    domain = make_domain(cast.ministry, "store-policy.example")
    DomainPlacement.objects.update_or_create(domain=domain, defaults={"node": node})
    actions.set_snapshot_policy(actor=None, customer=cast.ministry, hourly_keep=5)
    set_store_settings(actor=None, node=node, enabled=False)
    assert tasks.schedule(now=at(6))["started"] == []
    set_store_settings(actor=None, node=node, enabled=None)
    assert tasks.schedule(now=at(6))["started"] == [node.hostname]
    set_store_settings(actor=None, node=node, daily_keep=2)
    shown = effective_for_domain(domain)
    assert (
        shown["hourly_keep"]["value"] == 5 and shown["hourly_keep"]["source"]["name"] == "Ministry"
    )
    assert shown["daily_keep"] == {
        "value": 2,
        "source": {"level": "store", "id": node.pk, "name": node.hostname},
    }


def test_api_and_portal(cast: Cast) -> None:
    node = _imap_node(cast)
    client = token_client(cast.sub_admin)
    url = f"/api/v1/backup/mail-stores/{node.pk}/"
    shown = client.get(url).json()
    assert shown["own"]["compression"] == "" and shown["effective"]["compression"] == "on"
    assert "lz4" not in shown["compressionChoices"] and "gzip-9" in shown["compressionChoices"]
    response = client.patch(url, {"compression": "lz4", "dailyKeep": -1}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"compression", "dailyKeep"}
    response = client.patch(url, {"compression": "gzip", "dailyKeep": 3}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["effective"]["compression"] == "gzip"
    assert response.json()["own"]["dailyKeep"] == 3
    outsider = token_client(cast.sibling_admin)
    assert outsider.get(url).status_code == 404
    assert outsider.patch(url, {"compression": "off"}, format="json").status_code == 404

    web = portal(cast.sub_admin)
    assert node.hostname in web.get("/backup/mail-stores/").content.decode()
    page = web.get(f"/backup/mail-stores/{node.pk}/").content.decode()
    assert 'value="gzip" selected' in page and 'value="lz4"' not in page
    response = web.post(
        f"/backup/mail-stores/{node.pk}/", {"compression": "zle", "dedup": "", "enabled": "unknown"}
    )
    assert response.status_code == 302
    assert client.get(url).json()["own"]["compression"] == "zle"
    assert portal(cast.sibling_admin).get(f"/backup/mail-stores/{node.pk}/").status_code == 404


def _zfs_value(dataset: str, prop: str) -> str:
    argv = ["zfs", "get", "-H", "-o", "value", prop, dataset]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def test_every_compression_offered_for_zfs_fuse_is_one_it_takes(pool: str) -> None:  # noqa: F811
    """The list offered for zfs-fuse nodes, on a real zfs-fuse pool; lz4 it refuses."""
    dataset = f"{pool}/complist"
    subprocess.run(["zfs", "create", dataset], check=True)
    try:
        for value in COMMON_COMPRESSION:
            subprocess.run(["zfs", "set", f"compression={value}", dataset], check=True)
            shown = _zfs_value(dataset, "compression")
            assert shown == ("gzip" if value == "gzip-6" else value)  # stored as "gzip"
        refused = subprocess.run(
            ["zfs", "set", "compression=lz4", dataset], capture_output=True, text=True
        )
        assert refused.returncode != 0
    finally:
        subprocess.run(["zfs", "destroy", "-r", dataset], check=False)


def test_a_lost_converge_job_leaves_the_node_dirty_for_the_reconciler(
    cast: Cast, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    """The intent is the generation bump in the action's own transaction: with the job
    after commit never queued (the process died there), the reconciler still finds the
    node and queues its converge."""
    from deploy import dirty
    from deploy.reconcile import converge_dirty_nodes
    from ums import jobs as jobs_module

    monkeypatch.setattr(jobs_module, "_dispatch", lambda job_id: None)  # no worker here
    node = _imap_node(cast)
    with django_capture_on_commit_callbacks(execute=False):
        set_store_settings(actor=None, node=node, compression="lzjb")
    assert not Job.objects.filter(kind="node.converge").exists()
    assert dirty.is_dirty(node.pk)
    with django_capture_on_commit_callbacks(execute=False):
        assert converge_dirty_nodes() == {"queued": 1}
    job = Job.objects.get(kind="node.converge")
    assert job.params["node_id"] == node.pk and not job.params["dry_run"]
