"""Without nodes: what restores from Maildir archives, the snapshot delete and the
on-demand retention field accept and refuse (API field errors, portal form errors, 404
outside scope, audit), and which copy a rebuild takes. The node side runs in
test_archrestore_node.py."""

from __future__ import annotations

import pytest
from django.utils import timezone

from audit.models import AuditRecord
from backup import rebuild
from backup.models import BackupTarget, Snapshot
from backup.models_offnode import OffnodeCopy
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox
from ums.models import Job

from .test_offnode import _setting
from .test_portal import portal
from .test_snapshots import _imap_node

pytestmark = pytest.mark.django_db


def _archive(cast: Cast, domain, node) -> OffnodeCopy:
    target = BackupTarget.objects.create(
        customer=cast.ministry,
        customer_path=cast.ministry.path,
        name="t",
        kind="nfs",
        nfs_path="/srv/none",
    )
    return OffnodeCopy.objects.create(
        kind=OffnodeCopy.ARCHIVE,
        target=target,
        location="ums-archive/x",
        domain=domain,
        domain_name=domain.name,
        customer_path=domain.customer_path,
        source_node=node,
        snapshots=["ums-daily-20261206T0000Z", "ums-manual-20261207T101500Z"],
        last_snapshot="ums-manual-20261207T101500Z",
        copied_at=timezone.now(),
    )


def test_archive_restore_api_takes_domain_folder_and_mode(cast: Cast) -> None:
    setting = _setting(cast.government, "imap-ar.example.org")
    domain = make_domain(cast.ministry, "ar.example")
    alice = make_mailbox(domain, "alice")
    copy = _archive(cast, domain, setting.node)
    client = token_client(cast.sub_admin)
    url = f"/api/v1/backup/offnode-copies/{copy.pk}/restore/"
    for bad, fields in (
        ({"folder": "Sent"}, {"folder"}),
        ({"mailbox": alice.pk, "folder": "a/b"}, {"folder"}),
        ({"mode": "overwrite"}, {"mode"}),
        ({"snapshot": "ums-daily-20200101T0000Z"}, {"snapshot"}),
    ):
        response = client.post(url, bad, format="json")
        assert response.status_code == 400, (bad, response.content)
        assert set(response.json()["errors"]) == fields, response.json()
    assert not Job.objects.filter(kind="backup.archive_restore").exists()
    response = client.post(url, {}, format="json")  # the whole domain, newest archive
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.params["mailbox_id"] is None and job.params["domain_id"] == domain.pk
    assert job.params["mode"] == "new_folder"
    assert job.params["snapshot"] == "ums-manual-20261207T101500Z"
    response = client.post(
        url,
        {"mailbox": alice.pk, "folder": "INBOX.Sent", "mode": "in_place"},
        format="json",
    )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert (job.params["folder"], job.params["mode"]) == ("Sent", "in_place")
    record = AuditRecord.objects.filter(action="offnode_archive.restore").latest("pk")
    assert record.changes["folder"] == "Sent" and record.changes["mode"] == "in_place"


def test_archive_restore_portal_form(cast: Cast) -> None:
    setting = _setting(cast.government, "imap-arp.example.org")
    domain = make_domain(cast.ministry, "arp.example")
    alice = make_mailbox(domain, "alice")
    copy = _archive(cast, domain, setting.node)
    web = portal(cast.sub_admin)
    page = web.get(f"/backup/domains/{domain.pk}/snapshots/").content.decode()
    url = f"/backup/offnode/copies/{copy.pk}/restore/"
    assert url in page and "Maildir archive copies" in page
    assert web.get(url).status_code == 200
    # In place needs its confirmation; a folder needs a mailbox; both said at once.
    response = web.post(url, {"snapshot": copy.last_snapshot, "folder": "Sent", "mode": "in_place"})
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert set(errors) == {"confirm", "folder"}, errors
    response = web.post(
        url,
        {"snapshot": "ums-daily-20261206T0000Z", "mailbox": alice.pk, "mode": "new_folder"},
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    job = Job.objects.filter(kind="backup.archive_restore").latest("pk")
    assert job.params["snapshot"] == "ums-daily-20261206T0000Z"
    assert str(job.pk) in response["Location"]
    # Outside the scope, or not an archive: no such page.
    assert portal(cast.sibling_admin).get(url).status_code == 404
    stream = OffnodeCopy.objects.create(
        kind=OffnodeCopy.NODE,
        backup_node=setting.backup_node,
        location="backup/ums/x",
        domain=domain,
        domain_name=domain.name,
        customer_path=domain.customer_path,
        last_snapshot="x",
        copied_at=timezone.now(),
    )
    assert web.get(f"/backup/offnode/copies/{stream.pk}/restore/").status_code == 404


def test_rebuild_takes_the_archive_when_it_is_the_only_copy_or_chosen(cast: Cast) -> None:
    setting = _setting(cast.government, "imap-rb.example.org")
    domain = make_domain(cast.ministry, "rb.example")
    archive = _archive(cast, domain, setting.node)
    assert rebuild.source_copy(domain.name) == archive
    stream = OffnodeCopy.objects.create(
        kind=OffnodeCopy.NODE,
        backup_node=setting.backup_node,
        location="backup/ums/x",
        domain=domain,
        domain_name=domain.name,
        customer_path=domain.customer_path,
        last_snapshot="x",
        copied_at=timezone.now(),
    )
    assert rebuild.source_copy(domain.name) == stream
    assert rebuild.source_copy(domain.name, "archive") == archive


def test_snapshot_delete_is_a_job_refused_for_a_copy_base(cast: Cast) -> None:
    node = _imap_node(cast)
    domain = make_domain(cast.ministry, "del.example")
    snaps = [
        Snapshot.objects.create(
            node=node,
            dataset=f"tank/mail/{domain.name}",
            name=name,
            domain=domain,
            customer_path=domain.customer_path,
            tier="manual",
            taken_at=timezone.now(),
            observed_at=timezone.now(),
        )
        for name in ("ums-manual-20261207T101500Z", "ums-manual-20261207T111500Z")
    ]
    OffnodeCopy.objects.create(
        kind=OffnodeCopy.TARGET,
        target=BackupTarget.objects.create(
            customer=cast.ministry, customer_path=cast.ministry.path, name="s", kind="nfs"
        ),
        location="ums-offnode/x",
        domain=domain,
        domain_name=domain.name,
        customer_path=domain.customer_path,
        last_snapshot=snaps[1].name,
        copied_at=timezone.now(),
    )
    client = token_client(cast.sub_admin)
    response = client.delete(f"/api/v1/backup/snapshots/{snaps[1].pk}/")
    assert response.status_code == 400 and set(response.json()["errors"]) == {"snapshot"}
    assert (
        token_client(cast.sibling_admin)
        .delete(f"/api/v1/backup/snapshots/{snaps[0].pk}/")
        .status_code
        == 404
    )
    response = client.delete(f"/api/v1/backup/snapshots/{snaps[0].pk}/")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.kind == "backup.delete_snapshot" and job.params["name"] == snaps[0].name
    record = AuditRecord.objects.get(action="snapshot.delete")
    assert record.changes["snapshot"] == f"tank/mail/{domain.name}@{snaps[0].name}"
    # The portal: a confirmation page, then the job.
    web = portal(cast.sub_admin)
    page = web.get(f"/backup/snapshots/{snaps[0].pk}/delete/").content.decode()
    assert snaps[0].name in page
    response = web.post(f"/backup/snapshots/{snaps[0].pk}/delete/")
    assert response.status_code == 302 and "/jobs/" in response["Location"]


def test_manual_keep_days_in_the_policy_api_and_form(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    url = f"/api/v1/backup/snapshot-policies/{cast.ministry.pk}/"
    response = client.patch(url, {"manualKeepDays": 5000}, format="json")
    assert response.status_code == 400 and set(response.json()["errors"]) == {"manualKeepDays"}
    response = client.patch(url, {"manualKeepDays": 3}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["own"]["manualKeepDays"] == 3
    department = client.get(f"/api/v1/backup/snapshot-policies/{cast.department.pk}/").json()
    assert department["effective"]["manualKeepDays"]["value"] == 3  # inherited
    web = portal(cast.sub_admin)
    response = web.get(f"/backup/policies/{cast.ministry.pk}/")
    assert 'name="manual_keep_days"' in response.content.decode()


def test_archive_restore_offers_and_checks_the_archived_mailboxes_and_folders(
    cast: Cast,
) -> None:
    setting = _setting(cast.government, "imap-arm.example.org")
    domain = make_domain(cast.ministry, "arm.example")
    alice = make_mailbox(domain, "alice")
    bob = make_mailbox(domain, "bob")  # excluded when the archives were written
    copy = _archive(cast, domain, setting.node)
    copy.members = {
        "ums-daily-20261206T0000Z": {"Alice": ["Old"]},
        "ums-manual-20261207T101500Z": {"Alice": ["Archive.2025", "Sent"]},
    }
    copy.save()
    web = portal(cast.sub_admin)
    url = f"/backup/offnode/copies/{copy.pk}/restore/"
    response = web.get(url)
    page = response.content.decode()
    form = response.context["form"]
    assert list(form.fields["mailbox"].queryset) == [alice]  # bob is in no archive
    assert 'list="archive-folders"' in page and '<datalist id="archive-folders">' in page
    for name in ("INBOX", "Archive.2025", "Sent", "Old"):
        assert f'<option value="{name}">' in page, name
    newest = copy.last_snapshot
    # A folder not in the chosen archive, and a mailbox not in it: form errors, no job.
    for data, field in (
        ({"snapshot": newest, "mailbox": alice.pk, "folder": "Old"}, "folder"),
        ({"snapshot": newest, "mailbox": alice.pk, "folder": "Drafts"}, "folder"),
        ({"snapshot": newest, "mailbox": bob.pk}, "mailbox"),
    ):
        response = web.post(url, {**data, "mode": "new_folder"})
        assert response.status_code == 200, data
        assert set(response.context["form"].errors) == {field}, response.context["form"].errors
    assert not Job.objects.filter(kind="backup.archive_restore").exists()
    # A parent of an archived folder selects it; INBOX is always there.
    for folder in ("Archive", "INBOX", "Sent"):
        data = {"snapshot": newest, "mailbox": alice.pk, "folder": folder, "mode": "new_folder"}
        assert web.post(url, data).status_code == 302, folder
    # The API checks the same (one check, in the action).
    client = token_client(cast.sub_admin)
    response = client.post(
        f"/api/v1/backup/offnode-copies/{copy.pk}/restore/",
        {"mailbox": alice.pk, "folder": "Drafts"},
        format="json",
    )
    assert response.status_code == 400 and set(response.json()["errors"]) == {"folder"}
    response = client.post(
        f"/api/v1/backup/offnode-copies/{copy.pk}/restore/",
        {"mailbox": bob.pk, "snapshot": "ums-daily-20261206T0000Z"},
        format="json",
    )
    assert response.status_code == 400 and set(response.json()["errors"]) == {"mailbox"}


def test_rebuild_source_choices_are_short_enough_for_the_select() -> None:
    from backup.offnode_forms import RebuildForm

    form = RebuildForm(actor=None)
    labels = [str(label) for _value, label in form.fields["prefer"].choices]
    # Longer labels were cut off in the select at 1280 px; the detail is in the help.
    assert labels and all(len(label) <= 30 for label in labels), labels
    assert "Maildir archive" in str(form.fields["prefer"].help_text)


def test_an_older_archive_without_recorded_folders_keeps_every_mailbox_offered(
    cast: Cast,
) -> None:
    setting = _setting(cast.government, "imap-aro.example.org")
    domain = make_domain(cast.ministry, "aro.example")
    alice = make_mailbox(domain, "alice")
    bob = make_mailbox(domain, "bob")
    copy = _archive(cast, domain, setting.node)
    copy.members = {"ums-manual-20261207T101500Z": {"alice": ["Sent"]}}  # the daily: unknown
    copy.save()
    web = portal(cast.sub_admin)
    url = f"/backup/offnode/copies/{copy.pk}/restore/"
    response = web.get(url)
    assert set(response.context["form"].fields["mailbox"].queryset) == {alice, bob}
    assert '<option value="Sent">' in response.content.decode()
    # The older archive is not checked (its folders are unknown); the newest is.
    data = {"snapshot": "ums-daily-20261206T0000Z", "mailbox": bob.pk, "folder": "X"}
    assert web.post(url, {**data, "mode": "new_folder"}).status_code == 302
    data = {"snapshot": copy.last_snapshot, "mailbox": bob.pk, "mode": "new_folder"}
    assert set(web.post(url, data).context["form"].errors) == {"mailbox"}
