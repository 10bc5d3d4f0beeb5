"""Maildir exports without a node: who may request one (the content permission), scoping,
the signed time-limited download link (streamed, decrypted, audited; 410 and the file
deleted once expired), the file encrypted at rest with mode 0600, and the cleanup task.
The export job against a real IMAP node is in test_export_purge_node.py."""

from __future__ import annotations

import datetime
import hashlib
import secrets
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditRecord
from backup import crypto, tasks
from backup import export as export_mod
from backup.models import Export
from deploy.models import DomainPlacement
from tenants import permissions as perms
from tests.api.contracts import COVERED
from tests.fixtures import PASSWORD, Cast, make_admin, token_client
from tests.mail.helpers import make_domain, make_mailbox
from ums import jobs
from ums.models import Job

from .test_snapshots import _imap_node


@pytest.fixture(autouse=True)
def _own_var_dir(settings, tmp_path: Path) -> None:
    settings.VAR_DIR = tmp_path  # controller export files of this test only


pytestmark = pytest.mark.django_db
# Scoping of this route (outsider 404, lists) is tested below, not by the CRUD contract.
COVERED.add("export")
PLAIN = b"a tar would be here " * 1000


@pytest.fixture
def placed(cast: Cast):
    domain = make_domain(cast.ministry, "export.example")
    mailbox = make_mailbox(domain, "alice")
    DomainPlacement.objects.update_or_create(domain=domain, defaults={"node": _imap_node(cast)})
    return domain, mailbox


def _ready_export(domain, local_part: str = "alice", ttl: int = 3600) -> Export:
    export = Export.objects.create(
        token=secrets.token_hex(24),
        customer=domain.customer,
        customer_path=domain.customer_path,
        domain=domain,
        domain_name=domain.name,
        local_part=local_part,
        status=Export.READY,
        size_bytes=len(PLAIN),
        sha256=hashlib.sha256(PLAIN).hexdigest(),
        expires_at=timezone.now() + datetime.timedelta(seconds=ttl),
    )
    export.file_name = f"{export.token}.tar.enc"
    export.save()
    export_mod.write_private(export_mod.file_path(export), crypto.encrypt_stream([PLAIN]))
    return export


def portal(admin) -> Client:
    client = Client()
    assert client.login(username=admin.username, password=PASSWORD)
    return client


def test_export_needs_the_content_permission(cast: Cast, placed) -> None:
    _domain, mailbox = placed
    no_content = make_admin(
        cast.government, "no.content", [c for c in perms.ALL if c != perms.SPAMHOLD_READ_CONTENT]
    )
    response = token_client(no_content).post(
        "/api/v1/backup/exports/", {"mailbox": mailbox.pk}, format="json"
    )
    assert response.status_code == 403
    assert not Export.objects.exists() and not Job.objects.filter(kind="backup.export").exists()
    assert portal(no_content).get(f"/backup/exports/new/?mailbox={mailbox.pk}").status_code == 403

    response = token_client(cast.sub_admin).post(
        "/api/v1/backup/exports/", {"mailbox": mailbox.pk}, format="json"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["job"]["kind"] == "backup.export" and body["localPart"] == "alice"
    assert AuditRecord.objects.filter(action="backup.export.request").count() == 1
    # The node has no pinned host key: the job fails saying so, the export says failed.
    jobs.load_handlers()
    jobs.run(body["job"]["id"])
    assert Job.objects.get(pk=body["job"]["id"]).status == Job.FAILED
    export = Export.objects.get(pk=body["id"])
    assert export.status == Export.FAILED and "pinned host key" in export.error


def test_export_request_outside_scope_and_bad_input(cast: Cast, placed) -> None:
    domain, mailbox = placed
    outsider = token_client(cast.sibling_admin)
    response = outsider.post("/api/v1/backup/exports/", {"mailbox": mailbox.pk}, format="json")
    assert response.status_code == 404
    response = token_client(cast.sub_admin).post(
        "/api/v1/backup/exports/", {"mailbox": mailbox.pk, "domain": domain.pk}, format="json"
    )
    assert response.status_code == 400
    assert set(response.json()["errors"]) >= {"mailbox", "domain"}
    other = make_domain(cast.ministry, "unplaced.example")
    response = token_client(cast.sub_admin).post(
        "/api/v1/backup/exports/", {"domain": other.pk}, format="json"
    )
    assert response.status_code == 400 and "domain" in response.json()["errors"]
    _ready_export(domain)
    assert outsider.get("/api/v1/backup/exports/").json()["results"] == []


def test_download_link_streams_decrypted_and_is_audited(cast: Cast, placed) -> None:
    domain, _mailbox = placed
    export = _ready_export(domain)
    path = export_mod.file_path(export)
    assert path.stat().st_mode & 0o777 == 0o600
    assert PLAIN[:40] not in path.read_bytes()  # encrypted at rest
    client = portal(cast.sub_admin)
    page = client.get("/backup/exports/")
    assert page.status_code == 200
    link = page.context["object_list"][0].download_link
    response = client.get(link)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == PLAIN
    assert response["X-Checksum-SHA256"] == hashlib.sha256(PLAIN).hexdigest()
    assert AuditRecord.objects.filter(action="backup.export.download").count() == 1
    # Through the API as well, and the API hands out the same kind of link.
    api = token_client(cast.sub_admin)
    listed = api.get("/api/v1/backup/exports/").json()["results"][0]

    # Same export, same kind of signed link (the signature's timestamp may have moved on a
    # second between the two requests, so compare what it signs, not the whole token).
    def signed_value(url: str) -> str:
        return url.split("/backup/exports/download/")[1].split(":")[0]

    assert listed["downloadUrl"].startswith("http://testserver/backup/exports/download/")
    assert signed_value(listed["downloadUrl"]) == signed_value(link)
    response = api.get(f"/api/v1/backup/exports/{export.pk}/download/")
    assert b"".join(response.streaming_content) == PLAIN
    # Not without the content permission, not outside the scope, not with a forged link.
    viewer = make_admin(cast.government, "viewer", [perms.MAIL_VIEW])
    assert portal(viewer).get(link).status_code == 403
    assert portal(cast.sibling_admin).get(link).status_code in (403, 404)
    assert client.get(link[:-3] + "xyz/").status_code == 404


def test_expired_link_is_gone_and_the_file_deleted(cast: Cast, placed, settings) -> None:
    domain, _mailbox = placed
    export = _ready_export(domain, ttl=-1)
    link = export_views_link(export)
    response = portal(cast.sub_admin).get(link)
    assert response.status_code == 410
    assert not export_mod.file_path(export).exists()
    export.refresh_from_db()
    assert export.status == Export.EXPIRED
    # The periodic cleanup deletes the others.
    other = _ready_export(domain)
    assert tasks.cleanup_exports()["expired"] == 0
    Export.objects.filter(pk=other.pk).update(expires_at=timezone.now())
    assert tasks.cleanup_exports()["expired"] == 1
    assert not export_mod.file_path(other).exists()
    # An export whose job was given up is shown as failed, not running for ever.
    stuck = _ready_export(domain)
    job = Job.objects.create(kind="backup.export", title="x", status=Job.FAILED)
    Export.objects.filter(pk=stuck.pk).update(status=Export.RUNNING, job=job)
    tasks.cleanup_exports()
    assert Export.objects.get(pk=stuck.pk).status == Export.FAILED


def export_views_link(export: Export) -> str:
    from backup.export_views import download_url

    return download_url(export)


def test_export_buttons_and_form(cast: Cast, placed) -> None:
    domain, mailbox = placed
    client = portal(cast.sub_admin)
    page = client.get(f"/mail/mailboxes/{mailbox.pk}/").content.decode()
    assert f"/backup/exports/new/?mailbox={mailbox.pk}" in page
    page = client.get(f"/mail/domains/{domain.pk}/").content.decode()
    assert f"/backup/exports/new/?domain={domain.pk}" in page
    no_content = make_admin(
        cast.government, "no.content2", [c for c in perms.ALL if c != perms.SPAMHOLD_READ_CONTENT]
    )
    page = portal(no_content).get(f"/mail/mailboxes/{mailbox.pk}/").content.decode()
    assert "/backup/exports/new/" not in page
    assert client.get(f"/backup/exports/new/?mailbox={mailbox.pk}").status_code == 200
    assert (
        portal(cast.sibling_admin).get(f"/backup/exports/new/?mailbox={mailbox.pk}").status_code
        == 404
    )
    response = client.post(f"/backup/exports/new/?mailbox={mailbox.pk}", {"target": "999999"})
    assert response.status_code == 200 and response.context["form"].errors["target"]
    response = client.post(f"/backup/exports/new/?mailbox={mailbox.pk}", {})
    assert response.status_code == 302 and "/jobs/" in response["Location"]
    assert Export.objects.get().local_part == "alice"


def test_export_lists_run_a_constant_number_of_queries(
    cast: Cast, placed, django_assert_max_num_queries
) -> None:
    domain, _mailbox = placed
    for _ in range(3):
        _ready_export(domain)
    api, client = token_client(cast.sub_admin), portal(cast.sub_admin)
    with django_assert_max_num_queries(20) as few:
        assert len(api.get("/api/v1/backup/exports/").json()["results"]) == 3
        assert client.get("/backup/exports/").status_code == 200
    for _ in range(10):
        _ready_export(domain)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(api.get("/api/v1/backup/exports/").json()["results"]) == 13
        assert client.get("/backup/exports/").status_code == 200


def test_purge_of_a_mailbox_deleted_the_ordinary_way(cast: Cast, monkeypatch) -> None:
    """No node holds it any more (never placed here), but exports of it still exist:
    purge by name finds and destroys them, asks first, and says what it did."""
    import io

    from django.core.management import CommandError, call_command

    from mail import actions as mail_actions

    domain = make_domain(cast.ministry, "gone.example")
    mailbox = make_mailbox(domain, "carol")
    mine, whole = _ready_export(domain, "carol"), _ready_export(domain, "")
    other = _ready_export(domain, "dave")
    mail_actions.delete_mailbox(actor=None, mailbox=mailbox)
    with pytest.raises(CommandError, match="--permanent"):
        call_command("purge_mailbox", "carol@gone.example", stdout=io.StringIO())
    with pytest.raises(CommandError, match="unknown domain"):
        call_command("purge_mailbox", "x@nowhere.example", "--permanent", stdout=io.StringIO())
    monkeypatch.setattr("builtins.input", lambda: "y")
    out = io.StringIO()
    call_command("purge_mailbox", "Carol@gone.example", "--permanent", stdout=out)
    assert f"export #{mine.pk}" in out.getvalue() and f"export #{whole.pk}" in out.getvalue()
    assert f"export #{other.pk}" not in out.getvalue()
    assert "Nothing was changed." in out.getvalue()
    assert export_mod.file_path(mine).exists()
    out = io.StringIO()
    call_command("purge_mailbox", "carol@gone.example", "--permanent", "--yes", stdout=out)
    assert "2 copies destroyed" in out.getvalue()
    assert not export_mod.file_path(mine).exists() and not export_mod.file_path(whole).exists()
    assert export_mod.file_path(other).exists()
    assert Export.objects.get(pk=mine.pk).status == Export.PURGED
    record = AuditRecord.objects.get(action="backup.purge.done")
    assert record.object_repr == "carol@gone.example" and record.actor_name == "system"
