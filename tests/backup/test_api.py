"""The backup API: targets through the shared endpoint contract (scoped, audited, 404
outside), secrets write-only and encrypted at rest, every bad field at once, the test
job against a real S3 server, snapshots and snapshot policies."""

from __future__ import annotations

from django.db import connection

from backup.models import BackupTarget, Snapshot
from deploy.models import DomainPlacement
from tests.api.contracts import COVERED, ScopedEndpointContract
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox
from ums import jobs
from ums.models import Job

from .servers import S3Server
from .test_snapshots import _imap_node, at

SECRET = "very-secret-key-value-123"
# Read-only and action routes whose scoping (outsider: empty list, 404) is tested below
# rather than through the create/update/delete contract.
COVERED.update({"snapshot", "snapshotpolicy"})


def make_target(customer, name: str = "Archive", **fields) -> BackupTarget:
    from backup import actions

    values = {"kind": "nfs", "nfs_path": "/mnt/backup"}
    values.update(fields)
    return actions.create_target(actor=None, customer=customer, name=name, **values)


class TestBackupTargetEndpoint(ScopedEndpointContract):
    basename = "backuptarget"
    model = BackupTarget
    audit_prefix = "backup_target."

    def make_in_scope(self, cast: Cast) -> BackupTarget:
        return make_target(cast.ministry, "Ministry archive")

    def make_outside(self, cast: Cast) -> BackupTarget:
        return make_target(cast.shop, "Shop archive")

    def create_payload(self, cast: Cast) -> dict:
        return {
            "customer": cast.government.pk,
            "name": "Gov NFS",
            "kind": "nfs",
            "nfsPath": "/srv/backups",
        }

    def update_payload(self, cast: Cast, obj: BackupTarget) -> dict:
        return {"nfsPath": "/srv/other"}

    def escape_payload(self, cast: Cast, obj: BackupTarget) -> dict:
        return {"customer": cast.isp.pk}


def test_secret_is_write_only_and_encrypted_at_rest(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    response = client.post(
        "/api/v1/backup/targets/",
        {
            "customer": cast.government.pk,
            "name": "S3 archive",
            "kind": "s3",
            "s3Endpoint": "https://s3.example.net",
            "s3Bucket": "gov-backups",
            "s3AccessKey": "AKIDEXAMPLE",
            "s3SecretKey": SECRET,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert SECRET not in response.content.decode()
    assert response.json()["hasSecret"] is True
    pk = response.json()["id"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT s3_secret_key FROM backup_backuptarget WHERE id = %s", [pk])
        stored = cursor.fetchone()[0]
    assert SECRET not in stored and stored
    assert BackupTarget.objects.get(pk=pk).s3_secret_key == SECRET
    assert SECRET not in client.get(f"/api/v1/backup/targets/{pk}/").content.decode()
    # A blank secret on update keeps the stored one.
    client.patch(
        f"/api/v1/backup/targets/{pk}/", {"s3SecretKey": "", "s3Region": "eu-1"}, format="json"
    )
    assert BackupTarget.objects.get(pk=pk).s3_secret_key == SECRET
    from audit.models import AuditRecord

    assert SECRET not in str(list(AuditRecord.objects.values("changes", "search_text")))


def test_every_bad_field_at_once_nothing_written(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    response = client.post(
        "/api/v1/backup/targets/",
        {
            "customer": cast.government.pk,
            "name": "Bad",
            "kind": "s3",
            "s3Endpoint": "ftp://x.example",
            "s3Bucket": "Bad_Bucket",
            "s3Prefix": "../etc",
            "s3AccessKey": "key\nline",
        },
        format="json",
    )
    assert response.status_code == 400, response.content
    errors = response.json()
    for field in ("s3Endpoint", "s3Bucket", "s3Prefix", "s3AccessKey", "s3SecretKey"):
        assert field in str(errors), (field, errors)
    for payload in (
        {"kind": "nfs", "nfsPath": "relative/path"},
        {"kind": "nfs", "nfsPath": "/mnt/../etc"},
        {
            "kind": "cifs",
            "cifsServer": "bad host",
            "cifsShare": "a/b",
            "cifsUsername": "u",
            "cifsPassword": "p",
            "cifsPort": 70000,
        },
    ):
        response = client.post(
            "/api/v1/backup/targets/",
            {"customer": cast.government.pk, "name": "Bad", **payload},
            format="json",
        )
        assert response.status_code == 400, (payload, response.content)
    assert not BackupTarget.objects.exists()


def test_test_connection_job_against_real_s3(
    cast: Cast, s3_server: S3Server, django_capture_on_commit_callbacks
) -> None:
    client = token_client(cast.sub_admin)
    good = make_target(
        cast.ministry,
        "rclone",
        kind="s3",
        s3_endpoint=s3_server.url,
        s3_bucket="backups",
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
    )
    bad = make_target(
        cast.ministry,
        "rclone wrong",
        kind="s3",
        s3_endpoint=s3_server.url,
        s3_bucket="backups",
        s3_access_key=s3_server.access_key,
        s3_secret_key="not-the-secret-000",
    )
    jobs.load_handlers()  # what the worker does at start
    results = {}
    for target in (good, bad):
        response = client.post(f"/api/v1/backup/targets/{target.pk}/test/")
        assert response.status_code == 202, response.content
        results[target.pk] = jobs.run(response.json()["id"])
    assert results[good.pk] == Job.SUCCEEDED, Job.objects.get(object_id=str(good.pk)).error
    assert results[bad.pk] == Job.FAILED
    failed = Job.objects.get(object_id=str(bad.pk), kind="backup.test_target")
    assert "refused the secret key" in failed.error
    bad.refresh_from_db()
    good.refresh_from_db()
    assert good.last_test_ok is True and bad.last_test_ok is False
    assert "refused the secret key" in bad.last_test_message
    outsider = token_client(cast.sibling_admin)
    assert outsider.post(f"/api/v1/backup/targets/{good.pk}/test/").status_code == 404


def test_snapshots_listed_per_domain_and_mailbox_and_snapshot_now(cast: Cast) -> None:
    node = _imap_node(cast)
    domain = make_domain(cast.ministry, "list.example")
    mailbox = make_mailbox(domain, "alice")
    DomainPlacement.objects.update_or_create(domain=domain, defaults={"node": node})
    Snapshot.objects.create(
        node=node,
        domain=domain,
        customer_path=domain.customer_path,
        dataset="tank/mail/list.example",
        name="ums-daily-20261207T0000Z",
        tier="daily",
        taken_at=at(0),
        observed_at=at(1),
        used_bytes=10,
        referenced_bytes=2048,
    )
    client = token_client(cast.sub_admin)
    rows = client.get(f"/api/v1/backup/snapshots/?domain={domain.pk}").json()["results"]
    assert [(r["name"], r["referencedBytes"], r["takenAt"]) for r in rows] == [
        ("ums-daily-20261207T0000Z", 2048, at(0).timestamp())
    ]
    assert rows[0]["path"].endswith("/list.example/.zfs/snapshot/ums-daily-20261207T0000Z/")
    rows = client.get(f"/api/v1/backup/snapshots/?mailbox={mailbox.pk}").json()["results"]
    assert rows[0]["path"].endswith("/ums-daily-20261207T0000Z/alice/Maildir/")
    outsider = token_client(cast.sibling_admin)
    assert outsider.get(f"/api/v1/backup/snapshots/?domain={domain.pk}").json()["results"] == []
    assert outsider.get(f"/api/v1/backup/snapshots/?mailbox={mailbox.pk}").json()["results"] == []
    assert (
        outsider.post(
            "/api/v1/backup/snapshots/now/", {"domain": domain.pk}, format="json"
        ).status_code
        == 404
    )
    response = client.post("/api/v1/backup/snapshots/now/", {"domain": domain.pk}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["kind"] == "backup.snapshot_node"
    assert (
        client.post("/api/v1/backup/snapshots/now/", {"domain": "x"}, format="json").status_code
        == 400
    )


def test_snapshot_policy_endpoint(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    url = f"/api/v1/backup/snapshot-policies/{cast.ministry.pk}/"
    body = client.get(url).json()
    assert body["own"]["dailyKeep"] is None
    assert body["effective"]["dailyKeep"]["value"] == 30
    response = client.patch(
        url, {"dailyKeep": 7, "hourlyKeep": -1, "monthlyKeep": "x"}, format="json"
    )
    assert response.status_code == 400
    assert {"hourlyKeep", "monthlyKeep"} <= set(response.json().get("errors", response.json()))
    response = client.patch(url, {"dailyKeep": 7}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["effective"]["dailyKeep"]["source"]["name"] == "Ministry"
    outsider = token_client(cast.sibling_admin)
    assert outsider.get(url).status_code == 404
    assert outsider.patch(url, {"dailyKeep": 1}, format="json").status_code == 404


def test_lists_run_a_constant_number_of_queries(cast: Cast, django_assert_max_num_queries) -> None:
    node = _imap_node(cast)
    domain = make_domain(cast.ministry, "many.example")
    mailbox = make_mailbox(domain, "bob")
    for hour in range(30):
        make_target(cast.ministry, f"Target {hour}")
        Snapshot.objects.create(
            node=node,
            domain=domain,
            customer_path=domain.customer_path,
            dataset="tank/mail/many.example",
            name=f"ums-hourly-202612{1 + hour // 24:02d}T{hour % 24:02d}00Z",
            tier="hourly",
            taken_at=at(hour % 24, 1 + hour // 24),
            observed_at=at(0),
        )
    client = token_client(cast.sub_admin)
    for url in (
        "/api/v1/backup/targets/",
        f"/api/v1/backup/snapshots/?domain={domain.pk}",
        f"/api/v1/backup/snapshots/?mailbox={mailbox.pk}",
    ):
        with django_assert_max_num_queries(12):
            response = client.get(url)
        assert response.status_code == 200 and len(response.json()["results"]) == 30, url
