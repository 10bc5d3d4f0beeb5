"""Off-node copy settings, the scheduler and "restore onto a new node" without nodes:
the portal form (every error at once, 404 outside scope), the API, audit, which nodes are
due a copy, and what the rebuild refuses. The copies themselves run against real nodes in
test_offnode_node.py."""

from __future__ import annotations

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditRecord
from backup import offnode_jobs, offnode_zfs
from backup.models import BackupTarget
from backup.models_offnode import OffnodeCopy, OffnodeSetting
from deploy.models import DomainPlacement
from servers.models import Node
from tests.api.contracts import COVERED, ScopedEndpointContract
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain
from ums.models import Job

from .test_portal import portal
from .test_snapshots import _imap_node, pool  # noqa: F401  (the shared zfs-fuse pool)

pytestmark = pytest.mark.django_db
# The copies are observed state, read-only: scoping tested in test_copies_list_is_scoped.
COVERED.add("offnodecopy")


def _backup_node(cast: Cast, imap: Node) -> Node:
    return Node.objects.create(
        customer=cast.government,
        customer_path=cast.government.path,
        zone=imap.zone,
        hostname="backup1.example.org",
        ssh_address="192.0.2.31",
        status=imap.status,
        roles=["backup"],
    )


def test_setting_form_shows_every_error_then_saves_and_audits(cast: Cast) -> None:
    imap = _imap_node(cast)
    backup = _backup_node(cast, imap)
    client = portal(cast.sub_admin)
    assert client.get("/backup/offnode/").status_code == 200
    url = f"/backup/offnode/{imap.pk}/"
    node_page = client.get(reverse("servers:node-detail", args=[imap.pk])).content.decode()
    assert url in node_page and f"{url}rebuild/" in node_page
    assert client.get(url).status_code == 200
    response = client.post(
        url,
        {
            "enabled": "on",
            "backup_node": backup.pk,
            "backup_dataset": "bad name!",
            "interval_minutes": "60",
            "target_full_every": "30",
            "target_keep_chains": "2",
        },
    )
    assert response.status_code == 200
    assert "A dataset inside the backup node" in response.content.decode()
    response = client.post(
        url,
        {
            "enabled": "on",
            "backup_node": imap.pk,  # not offered: no backup role
            "backup_dataset": "backup/ums",
            "interval_minutes": "1",
            "target_full_every": "30",
            "target_keep_chains": "2",
        },
    )
    body = response.content.decode()
    assert "Select a valid choice" in body and "greater than or equal to 5" in body
    assert not OffnodeSetting.objects.exists()
    response = client.post(
        url,
        {
            "enabled": "on",
            "backup_node": backup.pk,
            "backup_dataset": "backup/ums",
            "interval_minutes": "30",
            "target_full_every": "30",
            "target_keep_chains": "2",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    setting = OffnodeSetting.objects.get(node=imap)
    assert (setting.backup_node, setting.backup_dataset, setting.interval_minutes) == (
        backup,
        "backup/ums",
        30,
    )
    assert AuditRecord.objects.filter(action="offnode_setting.update").exists()
    assert setting.archive_full_every == 7  # left out of the form: the default
    # How often a full Maildir archive starts a new chain: checked, then saved.
    saved = {
        "enabled": "on",
        "backup_node": backup.pk,
        "backup_dataset": "backup/ums",
        "interval_minutes": "30",
        "target_full_every": "30",
        "target_keep_chains": "2",
    }
    response = client.post(url, {**saved, "archive_full_every": "0"})
    assert response.status_code == 200
    assert "greater than or equal to 1" in response.content.decode()
    response = client.post(url, {**saved, "archive_full_every": "3"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert OffnodeSetting.objects.get(node=imap).archive_full_every == 3
    # The outsider sees none of it.
    outsider = portal(cast.sibling_admin)
    assert outsider.get(url).status_code == 404
    assert outsider.get(f"/backup/offnode/{imap.pk}/rebuild/").status_code == 404
    api = token_client(cast.sibling_admin)
    assert api.get(f"/api/v1/backup/offnode-settings/{setting.pk}/").status_code == 404
    assert api.get("/api/v1/backup/offnode-settings/").json()["results"] == []


def test_scheduler_starts_due_nodes_after_their_snapshot_pass(cast: Cast) -> None:
    imap = _imap_node(cast)
    backup = _backup_node(cast, imap)
    setting = OffnodeSetting.objects.create(
        node=imap,
        customer_path=imap.customer_path,
        backup_node=backup,
        backup_dataset="backup/ums",
        interval_minutes=60,
    )
    snapshot_job = Job.objects.create(
        kind="backup.snapshot_node",
        title="snap",
        object_type="servers.node",
        object_id=str(imap.pk),
        next_attempt_at=timezone.now(),
    )
    assert offnode_jobs.schedule()["started"] == []  # the snapshot pass comes first
    Job.objects.filter(pk=snapshot_job.pk).update(status=Job.SUCCEEDED)
    assert offnode_jobs.schedule()["started"] == [imap.hostname]
    assert offnode_jobs.schedule()["started"] == []  # one pending already
    Job.objects.filter(kind="backup.offnode_copy").update(status=Job.SUCCEEDED)
    OffnodeSetting.objects.filter(pk=setting.pk).update(last_run_at=timezone.now())
    assert offnode_jobs.schedule()["started"] == []  # not due before its interval
    later = timezone.now() + datetime.timedelta(minutes=61)
    assert offnode_jobs.schedule(now=later)["started"] == [imap.hostname]


def test_rebuild_refuses_without_copies_or_a_proper_new_node(cast: Cast) -> None:
    lost = _imap_node(cast)
    new = Node.objects.create(
        customer=cast.government,
        customer_path=cast.government.path,
        zone=lost.zone,
        hostname="imap2.example.org",
        ssh_address="192.0.2.32",
        status=lost.status,
        roles=["imap"],
    )
    backup = _backup_node(cast, lost)
    domain = make_domain(cast.ministry, "lost.example")
    DomainPlacement.objects.create(domain=domain, node=lost)
    api = token_client(cast.sub_admin)
    url = "/api/v1/backup/offnode-settings/rebuild/"
    response = api.post(url, {"node": lost.pk, "newNode": backup.pk}, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert "approved IMAP node" in str(errors["newNode"]) and "lost.example" in str(errors["node"])
    OffnodeCopy.objects.create(
        domain=domain,
        domain_name=domain.name,
        customer_path=domain.customer_path,
        kind=OffnodeCopy.NODE,
        source_node=lost,
        backup_node=backup,
        location="backup/ums/lost.example",
        snapshots=["ums-daily-20261207T0000Z"],
        last_snapshot="ums-daily-20261207T0000Z",
        copied_at=timezone.now(),
    )
    client = portal(cast.sub_admin)
    page = client.get(f"/backup/offnode/{lost.pk}/rebuild/").content.decode()
    assert "lost.example" in page and "ums-daily-20261207T0000Z" in page
    response = api.post(url, {"node": lost.pk, "newNode": new.pk}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.params["domain_ids"] == [domain.pk] and job.params["new_node_id"] == new.pk
    assert AuditRecord.objects.filter(action="node.rebuild").exists()


def test_common_snapshot_is_found_by_guid_and_names_are_checked() -> None:
    snap = offnode_zfs.Snap
    source = [
        snap("ums-daily-a", "1", 1),
        snap("ums-hourly-b", "2", 2),
        snap("ums-hourly-c", "3", 3),
    ]
    assert offnode_zfs.last_common(source, [snap("ums-hourly-b", "2", 9)]).name == "ums-hourly-b"
    # Same name, other GUID (a dataset recreated): not a common base.
    assert offnode_zfs.last_common(source, [snap("ums-hourly-c", "99", 9)]) is None
    assert offnode_zfs.send_argv("p/m/d", "s2", "s1") == [
        "zfs",
        "send",
        "-I",
        "p/m/d@s1",
        "p/m/d@s2",
    ]
    for bad in ("p/m/d; rm -rf /", "../x", "p//x", "-o/x"):
        with pytest.raises(offnode_zfs.OffnodeError):
            offnode_zfs.check_dataset(bad)


def test_the_snapshot_an_offnode_copy_continues_from_is_never_pruned(
    pool: str,  # noqa: F811
    cast: Cast,
) -> None:
    from backup import actions, snapshot_run
    from deploy.services.zfs import ZfsService
    from tests.services.localconn import LocalConnector

    from .test_snapshots import _domain_data, _snapshot_names, _state, at

    conn = LocalConnector()
    conf = {"mail_store_pool": pool}
    node = _imap_node(cast)
    domain = make_domain(cast.ministry, "base.example")
    service = ZfsService()
    service.apply(conn, service.plan(conn, _state(pool, _domain_data("base.example"))))
    actions.set_snapshot_policy(
        actor=None, customer=cast.ministry, hourly_keep=1, daily_keep=0, monthly_keep=0
    )
    snapshot_run.run_node(conn, node, [domain], conf=conf, now=at(4))
    OffnodeCopy.objects.create(
        domain=domain,
        domain_name=domain.name,
        customer_path=domain.customer_path,
        kind=OffnodeCopy.NODE,
        source_node=node,
        backup_node=_backup_node(cast, node),
        location="backup/ums/base.example",
        snapshots=["ums-hourly-20261207T0400Z"],
        last_snapshot="ums-hourly-20261207T0400Z",
        copied_at=timezone.now(),
    )
    for hour in (5, 6):
        snapshot_run.run_node(conn, node, [domain], conf=conf, now=at(hour))
    # Retention keeps one hourly, plus the base the next incremental copy starts from.
    assert _snapshot_names(f"{pool}/mail/base.example") == [
        "ums-hourly-20261207T0400Z",
        "ums-hourly-20261207T0600Z",
    ]


def _node(customer, hostname: str, roles: list[str]) -> Node:
    from servers import actions as server_actions

    zone = server_actions.create_zone(actor=None, customer=customer, name=f"Z {hostname}")
    return Node.objects.create(
        customer=customer,
        customer_path=customer.path,
        zone=zone,
        hostname=hostname,
        ssh_address="192.0.2.40",
        status="active",
        roles=roles,
    )


def _setting(customer, hostname: str) -> OffnodeSetting:
    imap = _node(customer, hostname, ["imap"])
    backup = _node(customer, f"backup-{hostname}", ["backup"])
    return OffnodeSetting.objects.create(
        node=imap,
        customer_path=imap.customer_path,
        backup_node=backup,
        backup_dataset="backup/ums",
    )


class TestOffnodeSettingEndpoint(ScopedEndpointContract):
    basename = "offnodesetting"
    model = OffnodeSetting
    audit_prefix = "offnode_setting."
    can_delete = False

    def make_in_scope(self, cast: Cast) -> OffnodeSetting:
        return _setting(cast.government, "imap-gov.example.org")

    def make_outside(self, cast: Cast) -> OffnodeSetting:
        return _setting(cast.isp, "imap-isp.example.org")

    def create_payload(self, cast: Cast) -> dict:
        imap = _node(cast.ministry, "imap-new.example.org", ["imap"])
        backup = _node(cast.ministry, "backup-new.example.org", ["backup"])
        return {"node": imap.pk, "backupNode": backup.pk, "backupDataset": "backup/ums"}

    def update_payload(self, cast: Cast, obj: OffnodeSetting) -> dict:
        return {"intervalMinutes": 120}

    def escape_payload(self, cast: Cast, obj: OffnodeSetting) -> dict:
        # A backup node outside the administrator's subtree is refused.
        return {"backupNode": _node(cast.isp, "backup-isp.example.org", ["backup"]).pk}


def test_copies_list_is_scoped(cast: Cast) -> None:
    inside = _setting(cast.government, "imap-g.example.org")
    domain = make_domain(cast.ministry, "listed.example")
    row = OffnodeCopy.objects.create(
        domain=domain,
        domain_name=domain.name,
        customer_path=domain.customer_path,
        kind=OffnodeCopy.NODE,
        source_node=inside.node,
        backup_node=inside.backup_node,
        location="backup/ums/listed.example",
        snapshots=["ums-daily-20261207T0000Z"],
        last_snapshot="ums-daily-20261207T0000Z",
        copied_at=timezone.now(),
    )
    rows = token_client(cast.sub_admin).get("/api/v1/backup/offnode-copies/").json()["results"]
    assert [r["id"] for r in rows] == [row.pk] and rows[0]["backupNodeHostname"]
    outsider = token_client(cast.sibling_admin)
    assert outsider.get("/api/v1/backup/offnode-copies/").json()["results"] == []
    assert outsider.get(f"/api/v1/backup/offnode-copies/{row.pk}/").status_code == 404


def test_excluded_domains_are_not_copied(cast: Cast, monkeypatch: pytest.MonkeyPatch) -> None:
    from backup import exclusions, offnode

    kept = make_domain(cast.ministry, "kept.example")
    out = make_domain(cast.ministry, "out.example")

    def for_domain(domain):
        return exclusions.Exclusions(domain_excluded=domain.name == "out.example")

    monkeypatch.setattr(exclusions, "for_domain", for_domain)
    assert offnode.copyable([kept, out]) == [kept]


def test_copy_now_while_a_pass_is_queued_returns_that_pass(cast: Cast) -> None:
    from backup import offnode_actions

    setting = _setting(cast.government, "imap-busy.example.org")
    queued = Job.objects.create(
        kind=offnode_actions.COPY_JOB,
        title="copy",
        object_type="servers.node",
        object_id=str(setting.node_id),
        next_attempt_at=timezone.now(),
    )
    job = offnode_actions.start_offnode_copy(actor=cast.sub_admin, node=setting.node)
    assert job.pk == queued.pk


def test_restore_from_an_archive_checks_kind_domain_snapshot_and_scope(cast: Cast) -> None:
    from tests.mail.helpers import make_mailbox

    setting = _setting(cast.government, "imap-arch.example.org")
    domain = make_domain(cast.ministry, "arch.example")
    other = make_mailbox(make_domain(cast.ministry, "other.example"), "carol")
    alice = make_mailbox(domain, "alice")
    target = BackupTarget.objects.create(
        customer=cast.ministry,
        customer_path=cast.ministry.path,
        name="t",
        kind="nfs",
        nfs_path="/srv/none",
    )
    common = {
        "domain": domain,
        "domain_name": domain.name,
        "customer_path": domain.customer_path,
        "source_node": setting.node,
        "snapshots": ["ums-daily-20261207T0000Z"],
        "last_snapshot": "ums-daily-20261207T0000Z",
        "copied_at": timezone.now(),
    }
    archive = OffnodeCopy.objects.create(
        kind=OffnodeCopy.ARCHIVE, target=target, location="ums-archive/x", **common
    )
    stream = OffnodeCopy.objects.create(
        kind=OffnodeCopy.NODE, backup_node=setting.backup_node, location="backup/ums/x", **common
    )
    client = token_client(cast.sub_admin)
    url = f"/api/v1/backup/offnode-copies/{archive.pk}/restore/"
    response = client.post(
        url, {"mailbox": other.pk, "snapshot": "ums-daily-20261201T0000Z"}, format="json"
    )
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"mailbox", "snapshot"}
    response = client.post(
        f"/api/v1/backup/offnode-copies/{stream.pk}/restore/", {"mailbox": alice.pk}, format="json"
    )
    assert response.status_code == 400 and set(response.json()["errors"]) == {"copy"}
    outsider = token_client(cast.sibling_admin)
    assert outsider.post(url, {"mailbox": alice.pk}, format="json").status_code == 404
    assert not Job.objects.filter(kind="backup.archive_restore").exists()
    response = client.post(url, {"mailbox": alice.pk}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.params["snapshot"] == "ums-daily-20261207T0000Z"
    assert AuditRecord.objects.filter(action="offnode_archive.restore").count() == 1
