"""The restore endpoint and portal flow: a job in scope with an audit row, every bad field
at once, nothing outside the administrator's subtree (the node part is
test_restore_zfs.py and test_restore_node.py)."""

from __future__ import annotations

from audit.models import AuditRecord
from backup.models import Snapshot
from backup.restore import RESTORE_JOB
from tests.api.contracts import COVERED
from tests.fixtures import PASSWORD, Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox
from ums.models import Job

from .test_snapshots import _imap_node, at

URL = "/api/v1/backup/restores/"
COVERED.add("restore")  # scoping tested here: outsiders get field errors / 404


def _snapshot(cast: Cast, customer, domain_name: str, node=None) -> Snapshot:
    domain = make_domain(customer, domain_name)
    return Snapshot.objects.create(
        node=node or _imap_node(cast, f"imap-{domain_name}"),
        domain=domain,
        customer_path=domain.customer_path,
        dataset=f"tank/mail/{domain_name}",
        name="ums-daily-20261201T0000Z",
        tier="daily",
        taken_at=at(0, 1),
        observed_at=at(1, 1),
    )


def test_restore_request_is_a_job_and_audited(cast: Cast) -> None:
    snap = _snapshot(cast, cast.ministry, "rest.example")
    alice = make_mailbox(snap.domain, "alice")
    client = token_client(cast.sub_admin)
    response = client.post(
        URL, {"snapshot": snap.pk, "mailbox": alice.pk, "folder": "Sent"}, format="json"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["kind"] == RESTORE_JOB
    job = Job.objects.get(pk=body["id"])
    assert job.params == {
        "snapshot_id": snap.pk,
        "mailbox_id": alice.pk,
        "folder": "Sent",
        "mode": "new_folder",
    }
    record = AuditRecord.objects.get(action="snapshot.restore")
    assert record.object_id == str(alice.pk)
    assert record.changes["mode"] == "new_folder" and record.changes["job"] == job.pk
    assert record.changes["snapshot"] == "tank/mail/rest.example@ums-daily-20261201T0000Z"
    # A whole domain, in place.
    response = client.post(URL, {"snapshot": snap.pk, "mode": "in_place"}, format="json")
    assert response.status_code == 202, response.content
    assert Job.objects.get(pk=response.json()["id"]).params["mailbox_id"] is None
    # The list is the restore jobs, newest first; none of them for another customer.
    rows = client.get(URL).json()["results"]
    assert [r["id"] for r in rows] == [response.json()["id"], job.pk]
    assert token_client(cast.sibling_admin).get(URL).json()["results"] == []


def test_every_bad_field_at_once_and_nothing_started(cast: Cast) -> None:
    snap = _snapshot(cast, cast.ministry, "bad.example")
    other = _snapshot(cast, cast.ministry, "other.example", node=snap.node)
    bob = make_mailbox(other.domain, "bob")
    client = token_client(cast.sub_admin)
    response = client.post(
        URL,
        {"snapshot": snap.pk, "mailbox": bob.pk, "folder": "../x", "mode": "overwrite"},
        format="json",
    )
    assert response.status_code == 400, response.content
    errors = str(response.json())
    for field in ("folder", "mode"):
        assert field in errors, (field, errors)
    response = client.post(URL, {"snapshot": snap.pk, "mailbox": bob.pk}, format="json")
    assert response.status_code == 400 and "mailbox" in str(response.json())
    response = client.post(URL, {"snapshot": snap.pk, "folder": "Sent"}, format="json")
    assert response.status_code == 400 and "folder" in str(response.json())
    for folder in ("a/b", "Sent..x", "x\u0000"):
        response = client.post(
            URL, {"snapshot": snap.pk, "mailbox": bob.pk, "folder": folder}, format="json"
        )
        assert response.status_code == 400, (folder, response.content)
    response = client.post(URL, {"snapshot": "x", "mode": 3}, format="json")
    assert response.status_code == 400
    assert {"snapshot", "mode"} <= set(str(response.json()).replace("'", " ").split())
    assert not Job.objects.filter(kind=RESTORE_JOB).exists()
    assert not AuditRecord.objects.filter(action="snapshot.restore").exists()


def test_snapshots_and_mailboxes_outside_scope_are_not_found(cast: Cast) -> None:
    theirs = _snapshot(cast, cast.shop, "shop.example")
    mine = _snapshot(cast, cast.ministry, "mine.example", node=theirs.node)
    carol = make_mailbox(theirs.domain, "carol")
    client = token_client(cast.sub_admin)
    response = client.post(URL, {"snapshot": theirs.pk}, format="json")
    assert response.status_code == 400
    assert "snapshot" in response.json().get("errors", response.json())
    response = client.post(URL, {"snapshot": mine.pk, "mailbox": carol.pk}, format="json")
    assert response.status_code == 400 and "mailbox" in str(response.json())
    viewer = token_client(cast.ministry_viewer)
    assert viewer.post(URL, {"snapshot": mine.pk}, format="json").status_code == 403
    assert not Job.objects.filter(kind=RESTORE_JOB).exists()


def test_portal_restore_flow(cast: Cast, client) -> None:
    snap = _snapshot(cast, cast.ministry, "portal.example")
    alice = make_mailbox(snap.domain, "alice")
    client.login(username="sub.admin", password=PASSWORD)
    page = client.get(f"/backup/domains/{snap.domain.pk}/snapshots/")
    restore_url = f"/backup/snapshots/{snap.pk}/restore/"
    assert restore_url in page.content.decode()
    assert f"/backup/mailboxes/{alice.pk}/snapshots/" in page.content.decode()
    page = client.get(f"/backup/mailboxes/{alice.pk}/snapshots/")
    assert page.status_code == 200 and f"{restore_url}?mailbox={alice.pk}" in page.content.decode()
    form = client.get(f"{restore_url}?mailbox={alice.pk}")
    assert form.status_code == 200 and "Restored 2026-12-01" in form.content.decode()
    # In place without the confirmation, a bad folder: every error at once, no job.
    response = client.post(
        restore_url, {"mailbox": alice.pk, "folder": "../etc", "mode": "in_place"}
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert "folder" in text.lower() and "confirm" in text.lower()
    assert not Job.objects.filter(kind=RESTORE_JOB).exists()
    response = client.post(
        restore_url, {"mailbox": alice.pk, "folder": "Sent", "mode": "new_folder"}
    )
    job = Job.objects.get(kind=RESTORE_JOB)
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.params["folder"] == "Sent" and job.params["mailbox_id"] == alice.pk
    response = client.post(restore_url, {"mailbox": "", "mode": "in_place", "confirm": "on"})
    assert response.status_code == 302
    assert Job.objects.filter(kind=RESTORE_JOB, params__mailbox_id=None).count() == 1
    client.logout()
    client.login(username="sibling.admin", password=PASSWORD)
    assert client.get(restore_url).status_code == 404
    assert client.post(restore_url, {"mode": "new_folder"}).status_code == 404


def test_portal_reads_the_folders_by_a_job_then_offers_them(cast: Cast, client) -> None:
    snap = _snapshot(cast, cast.ministry, "folders.example")
    alice = make_mailbox(snap.domain, "alice")
    client.login(username="sub.admin", password=PASSWORD)
    restore_url = f"/backup/snapshots/{snap.pk}/restore/"
    response = client.post(restore_url, {"mailbox": alice.pk, "list_folders": "1"})
    job = Job.objects.get(kind="backup.snapshot_folders")
    assert job.params == {"snapshot_id": snap.pk, "mailbox_id": alice.pk}
    assert response["Location"] == f"{restore_url}?mailbox={alice.pk}&folders={job.pk}"
    page = client.get(response["Location"]).content.decode()
    assert 'http-equiv="refresh"' in page  # still reading
    Job.objects.filter(pk=job.pk).update(
        status=Job.SUCCEEDED, result={"folders": [["INBOX", 3], ["Sent", 2]]}
    )
    page = client.get(response["Location"]).content.decode()
    assert '<option value="Sent">Sent (2)</option>' in page
    assert 'http-equiv="refresh"' not in page
    # The API starts the same job; another customer's mailbox is no such object.
    api = token_client(cast.sub_admin)
    response = api.post(f"{URL}folders/", {"snapshot": snap.pk, "mailbox": alice.pk}, format="json")
    assert response.status_code == 202 and response.json()["kind"] == "backup.snapshot_folders"
    outsider = token_client(cast.sibling_admin)
    response = outsider.post(
        f"{URL}folders/", {"snapshot": snap.pk, "mailbox": alice.pk}, format="json"
    )
    assert response.status_code == 400
