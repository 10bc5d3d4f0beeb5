"""Backup portal pages: targets created, edited, tested and deleted through the forms
(every error at once, secrets never rendered), 404 outside scope, a domain's snapshots
with "Snapshot now", and the snapshot policy form."""

from __future__ import annotations

import pytest
from django.test import Client

from backup.models import BackupTarget, Snapshot, SnapshotPolicy
from deploy.models import DomainPlacement
from tests.fixtures import PASSWORD, Cast
from tests.mail.helpers import make_domain
from ums.models import Job

from .test_api import make_target
from .test_snapshots import _imap_node, at

pytestmark = pytest.mark.django_db


def portal(admin) -> Client:
    client = Client()
    assert client.login(username=admin.username, password=PASSWORD)
    return client


def test_target_pages_create_edit_test_delete(cast: Cast) -> None:
    client = portal(cast.sub_admin)
    assert client.get("/backup/targets/").status_code == 200
    assert client.get("/backup/targets/new/").status_code == 200
    response = client.post(
        "/backup/targets/new/",
        {
            "customer": cast.ministry.pk,
            "name": "Bad",
            "kind": "s3",
            "s3_endpoint": "ftp://x",
            "s3_bucket": "UPPER",
            "cifs_port": "445",
        },
    )
    assert response.status_code == 200
    body = response.content.decode()
    for text in ("Enter an http:// or https:// URL.", "3 to 63 lowercase", "Required for this"):
        assert text in body, text
    assert not BackupTarget.objects.exists()
    response = client.post(
        "/backup/targets/new/",
        {
            "customer": cast.ministry.pk,
            "name": "SMB",
            "kind": "cifs",
            "cifs_server": "nas.example",
            "cifs_port": "1445",
            "cifs_share": "backups",
            "cifs_username": "ums",
            "cifs_password": "Share-Secret-1",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    target = BackupTarget.objects.get(name="SMB")
    assert target.cifs_password == "Share-Secret-1"
    page = client.get(f"/backup/targets/{target.pk}/edit/").content.decode()
    assert "Share-Secret-1" not in page and "nas.example" in page
    response = client.post(
        f"/backup/targets/{target.pk}/edit/",
        {
            "name": "SMB",
            "cifs_server": "nas2.example",
            "cifs_port": "1445",
            "cifs_share": "backups",
            "cifs_username": "ums",
            "cifs_password": "",
        },
    )
    assert response.status_code == 302
    target.refresh_from_db()
    assert target.cifs_server == "nas2.example" and target.cifs_password == "Share-Secret-1"
    response = client.post(f"/backup/targets/{target.pk}/test/")
    job = Job.objects.get(kind="backup.test_target")
    assert response["Location"].endswith(f"/{job.pk}/")
    assert client.post(f"/backup/targets/{target.pk}/delete/").status_code == 302
    assert not BackupTarget.objects.filter(pk=target.pk).exists()


def test_outsider_gets_404(cast: Cast) -> None:
    target = make_target(cast.ministry)
    client = portal(cast.sibling_admin)
    assert "Archive" not in client.get("/backup/targets/").content.decode()
    for url in (
        f"/backup/targets/{target.pk}/edit/",
        f"/backup/targets/{target.pk}/delete/",
        f"/backup/policies/{cast.ministry.pk}/",
    ):
        assert client.get(url).status_code == 404
    assert client.post(f"/backup/targets/{target.pk}/test/").status_code == 404


def test_domain_snapshots_and_snapshot_now(cast: Cast) -> None:
    node = _imap_node(cast)
    domain = make_domain(cast.ministry, "page.example")
    DomainPlacement.objects.update_or_create(domain=domain, defaults={"node": node})
    Snapshot.objects.create(
        node=node,
        domain=domain,
        customer_path=domain.customer_path,
        dataset="tank/mail/page.example",
        name="ums-hourly-20261207T0600Z",
        tier="hourly",
        taken_at=at(6),
        observed_at=at(6),
        referenced_bytes=5 * 1024 * 1024,
    )
    client = portal(cast.sub_admin)
    listing = client.get("/backup/domains/").content.decode()
    assert f"/backup/domains/{domain.pk}/snapshots/" in listing
    assert "page.example" not in portal(cast.sibling_admin).get("/backup/domains/").content.decode()
    page = client.get(f"/backup/domains/{domain.pk}/snapshots/").content.decode()
    assert "ums-hourly-20261207T0600Z" in page and "5.0" in page
    response = client.post(f"/backup/domains/{domain.pk}/snapshot-now/")
    assert response.status_code == 302
    assert Job.objects.filter(kind="backup.snapshot_node", object_id=str(domain.pk)).exists()
    outsider = portal(cast.sibling_admin)
    assert outsider.get(f"/backup/domains/{domain.pk}/snapshots/").status_code == 404
    assert outsider.post(f"/backup/domains/{domain.pk}/snapshot-now/").status_code == 404


def test_policy_form(cast: Cast) -> None:
    client = portal(cast.sub_admin)
    url = f"/backup/policies/{cast.ministry.pk}/"
    assert client.get(url).status_code == 200
    response = client.post(url, {"enabled": "unknown", "hourly_keep": "-1", "daily_keep": "x"})
    assert response.status_code == 200
    assert not SnapshotPolicy.objects.exists()
    response = client.post(url, {"enabled": "true", "hourly_keep": "", "daily_keep": "7"})
    assert response.status_code == 302
    policy = SnapshotPolicy.objects.get(customer=cast.ministry)
    assert (policy.enabled, policy.hourly_keep, policy.daily_keep) == (True, None, 7)
    assert "set by Ministry" in client.get(url).content.decode()
