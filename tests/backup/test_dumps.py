"""Controller dumps end to end with real parts: the test database dumped with the real
``pg_dump``, written to rclone's S3 server, Samba's smbd and a plain directory standing in
for an NFS mount (no NFS server or client can run on this machine; the NFS driver only
ever sees a mounted directory), then restored with the real ``pg_restore`` into a fresh
empty PostgreSQL database where ``audit_verify`` runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from audit.models import AuditRecord
from backup import actions, crypto, dumps
from backup.drivers import driver_for
from backup.models import BackupTarget, Dump
from deploy import controller_keys
from servers.choices import NodeStatus
from servers.models import Node
from tests.api.contracts import COVERED
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox
from ums.models import Job

from .servers import S3Server, SmbServer

pytestmark = pytest.mark.django_db(transaction=True)  # pg_dump sees committed rows only
# Operators-only list and action routes: their scoping is tested here.
COVERED.add("dump")

BUCKET = "backups"


def _server_url(name: str) -> str:
    db = connection.settings_dict
    user = db.get("USER") or "root"
    return f"postgres://{user}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{name}"


@pytest.fixture
def drill_db() -> Iterator[str]:
    """A fresh empty database on the test server; dropped afterwards."""
    name = f"{connection.settings_dict['NAME']}_drill"[:63]
    admin = _server_url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _server_url(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def nfs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "nfs-export"  # stands in for the mounted NFS export
    path.mkdir()
    return path


def s3_target(cast: Cast, server: S3Server, name: str = "S3 dumps") -> BackupTarget:
    return actions.create_target(
        actor=None,
        customer=cast.provider,
        name=name,
        kind="s3",
        s3_endpoint=server.url,
        s3_bucket=BUCKET,
        s3_prefix="ums",
        s3_access_key=server.access_key,
        s3_secret_key=server.secret_key,
    )


def cifs_target(cast: Cast, server: SmbServer) -> BackupTarget:
    return actions.create_target(
        actor=None,
        customer=cast.provider,
        name="SMB dumps",
        kind="cifs",
        cifs_server="127.0.0.1",
        cifs_port=server.port,
        cifs_share=server.share,
        cifs_path="ums",
        cifs_username=server.username,
        cifs_password=server.password,
    )


def nfs_target(cast: Cast, path: Path, customer=None, name: str = "NFS dumps") -> BackupTarget:
    return actions.create_target(
        actor=None, customer=customer or cast.provider, name=name, kind="nfs", nfs_path=str(path)
    )


def seed_controller(cast: Cast) -> None:
    """Something worth restoring: mail data, a controller key, a node to render."""
    from servers import actions as server_actions

    controller_keys.current()
    domain = make_domain(cast.ministry, "dump.example")
    make_mailbox(domain, "alice")
    zone = server_actions.create_zone(actor=None, customer=cast.provider, name="DC")
    Node.objects.create(
        customer=cast.provider,
        customer_path=cast.provider.path,
        zone=zone,
        hostname="mx1.example.org",
        ssh_address="192.0.2.40",
        os_id="debian",
        status=NodeStatus.ACTIVE,
        roles=["smtp", "imap"],
    )


def dump_now(cast: Cast) -> Job:
    response = token_client(cast.root_admin).post("/api/v1/backup/dumps/now/")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.SUCCEEDED, (job.error, job.log)
    return job


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_dump_reaches_every_target_encrypted_and_the_drill_restores_it(
    cast: Cast, s3_server: S3Server, smb_server: SmbServer, nfs_dir: Path, drill_db: str
) -> None:
    seed_controller(cast)
    targets = [s3_target(cast, s3_server), cifs_target(cast, smb_server), nfs_target(cast, nfs_dir)]
    # A tenant's own target never receives the whole controller.
    tenant_dir = nfs_dir.parent / "tenant"
    tenant_dir.mkdir()
    nfs_target(cast, tenant_dir, customer=cast.government, name="Tenant")

    records = AuditRecord.objects.count()
    job = dump_now(cast)
    name = job.result["dump"]
    assert sorted(job.result["targets"]) == sorted(t.name for t in targets)
    assert stored_files(tenant_dir) == []

    for target in targets:
        driver = driver_for(target)
        listing = dumps.read_listing(driver)
        manifest = listing.complete[name]
        kinds = {o["name"]: o.get("kind") for o in manifest["objects"]}
        assert kinds["database.pgdump"] == "database"
        assert {"keys.json", "settings.json"} <= set(kinds)
        assert any(n.startswith("nodes/") and n.endswith("-mx1.example.org.tar") for n in kinds), (
            manifest["objects"],
            manifest["nodes_failed"],
        )
        assert manifest["nodes_failed"] == []
        assert dumps.verify(driver, name, manifest) == []
        driver.close()

    # Nothing in clear on any target: no key, no password hash, no PEM.
    secrets = [
        b"PRIVATE KEY",
        settings.ENCRYPTION_KEYS[0].encode(),
        settings.SECRET_KEY.encode(),
        b"dump.example",
    ]
    for root in (s3_server.root / BUCKET, smb_server.root, nfs_dir):
        files = stored_files(root)
        assert files
        for path in files:
            data = path.read_bytes()
            assert data.startswith(crypto.MAGIC), path
            assert not any(s in data for s in secrets), path

    # The keys object holds what a new controller needs; settings hold no secret.
    driver = driver_for(targets[2])
    keys = json.loads(b"".join(dumps.crypto.decrypt_stream(driver.get(f"dumps/{name}/keys.json"))))
    assert keys["encryption_keys"] == list(settings.ENCRYPTION_KEYS)
    assert "PRIVATE KEY" in keys["controller_ssh_keys"][0]["private_key_pem"]
    plain_settings = b"".join(
        dumps.crypto.decrypt_stream(driver.get(f"dumps/{name}/settings.json"))
    ).decode()
    assert settings.SECRET_KEY not in plain_settings
    assert settings.UMS_BACKUP_KEY not in plain_settings
    assert "UMS_DUMP_KEEP" in plain_settings
    # A node's part is its rendered configuration: files under /etc and their index, no mail.
    import io
    import tarfile

    node_object = next(n for n in kinds if n.startswith("nodes/"))
    tar_bytes = b"".join(dumps.crypto.decrypt_stream(driver.get(f"dumps/{name}/{node_object}")))
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getnames()
    assert "UMS-FILES.json" in members and any(m.startswith("etc/postfix/") for m in members)
    assert all(m == "UMS-FILES.json" or m.startswith("etc/") for m in members), members

    # Listed per target through the API, read from the manifests.
    listed = token_client(cast.root_admin).get("/api/v1/backup/dumps/").json()["results"]
    assert {(d["targetName"], d["name"], d["status"]) for d in listed} == {
        (t.name, name, "written") for t in targets
    }
    assert all(d["sizeBytes"] > 0 for d in listed)

    # The drill from the SMB share: checksums, decryption, pg_restore, keys, audit_verify.
    out = _drill(targets[1], drill_db)
    assert "Restore drill passed" in out
    assert "Audit chain intact" in out
    with psycopg.connect(drill_db) as conn:
        (restored,) = conn.execute("SELECT count(*) FROM audit_auditrecord").fetchone()
        (mailboxes,) = conn.execute("SELECT count(*) FROM mail_mailbox").fetchone()
    assert restored >= records and mailboxes == 1
    assert AuditRecord.objects.filter(action="backup_dump.drill").exists()


def _drill(target: BackupTarget, url: str, **options: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("restore_drill", target=target.pk, database_url=url, stdout=out, **options)
    return out.getvalue()


def test_drill_refuses_a_database_that_is_not_empty(
    cast: Cast, nfs_dir: Path, drill_db: str
) -> None:
    target = nfs_target(cast, nfs_dir)
    dump_now(cast)
    with psycopg.connect(drill_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE precious (id int)")
    with pytest.raises(CommandError, match="not empty"):
        _drill(target, drill_db)
    with psycopg.connect(drill_db) as conn:
        assert (
            conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname='public'").fetchone()[0]
            == 1
        )


def test_a_corrupted_object_fails_the_drill_and_the_check(
    cast: Cast, s3_server: S3Server, drill_db: str
) -> None:
    target = s3_target(cast, s3_server, name="S3 corrupt")
    name = dump_now(cast).result["dump"]
    # Flip one byte of the stored database object in the S3 server's root folder.
    stored = next((s3_server.root / BUCKET / "ums" / "dumps" / name).glob("database.pgdump"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))

    with pytest.raises(CommandError, match=r"database\.pgdump: checksum mismatch"):
        _drill(target, drill_db)
    response = token_client(cast.root_admin).post(
        "/api/v1/backup/dumps/check/", {"target": target.pk}, format="json"
    )
    assert response.status_code == 202
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.FAILED and "Damaged dumps" in job.error
    row = Dump.objects.get(target=target, name=name)
    assert row.status == Dump.DAMAGED and "checksum mismatch" in row.status_message


def test_a_tampered_audit_record_fails_the_drill(cast: Cast, nfs_dir: Path, drill_db: str) -> None:
    target = nfs_target(cast, nfs_dir)
    record = AuditRecord.objects.order_by("seq").first()
    with connection.cursor() as cursor:
        # Past the append-only trigger, as someone with the database password could.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            "UPDATE audit_auditrecord SET object_repr = 'forged' WHERE seq = %s", [record.seq]
        )
        cursor.execute("SET session_replication_role = DEFAULT")
    dump_now(cast)
    with pytest.raises(CommandError, match="audit_verify failed"):
        _drill(target, drill_db)


def test_retention_keeps_n_dumps_and_partial_dumps_are_invisible_then_removed(
    cast: Cast, nfs_dir: Path, settings
) -> None:
    settings.UMS_DUMP_KEEP = 2
    target = nfs_target(cast, nfs_dir)
    # What a worker killed mid-dump leaves: objects, no manifest.
    partial = nfs_dir / "dumps" / "ums-dump-20260101T000000Z-j999999"
    partial.mkdir(parents=True)
    (partial / "database.pgdump").write_bytes(b"half")
    driver = driver_for(target)
    assert dumps.read_listing(driver).complete == {}

    names = [dump_now(cast).result["dump"] for _ in range(3)]
    assert not partial.exists() or not any(partial.iterdir())
    listing = dumps.read_listing(driver)
    assert sorted(listing.complete) == sorted(names[1:])
    assert listing.partial == {}
    assert sorted(Dump.objects.filter(target=target).values_list("name", flat=True)) == sorted(
        names[1:]
    )


def test_only_operators_see_or_start_dumps(cast: Cast, nfs_dir: Path) -> None:
    target = nfs_target(cast, nfs_dir)
    sub = token_client(cast.sub_admin)  # every permission, but under a top-level customer
    assert sub.get("/api/v1/backup/dumps/").status_code == 403
    assert sub.post("/api/v1/backup/dumps/now/").status_code == 403
    response = sub.post("/api/v1/backup/dumps/check/", {"target": target.pk}, format="json")
    assert response.status_code == 403
    assert not Job.objects.filter(kind="backup.dump").exists()
    assert token_client(cast.root_admin).get("/api/v1/backup/dumps/").status_code == 200


def test_scheduler_starts_one_dump_per_day(cast: Cast, nfs_dir: Path, settings) -> None:
    import datetime as dt

    from backup import dumps_jobs

    settings.UMS_DUMP_TIME = "02:30"
    nfs_target(cast, nfs_dir)
    before = dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.UTC)
    assert dumps_jobs.last_slot(before, "02:30") == dt.datetime(2026, 12, 6, 2, 30, tzinfo=dt.UTC)
    started = dumps_jobs.schedule()
    assert "started" in started
    assert "skipped" in dumps_jobs.schedule()
    assert Job.objects.filter(kind="backup.dump").count() == 1


def test_a_failed_scheduled_dump_is_tried_again_after_the_retry_delay(
    cast: Cast, nfs_dir: Path, settings
) -> None:
    import datetime as dt

    from backup import dumps_jobs

    settings.UMS_DUMP_TIME = "02:30"
    settings.UMS_DUMP_RETRY_MINUTES = 60
    nfs_target(cast, nfs_dir)
    # Fixed times, well inside one daily slot, with the jobs' own times set to match.
    now = dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.UTC)
    first = dumps_jobs.schedule(now)["started"]
    # It failed (the target was away) at 03:05; at 03:15: not yet.
    Job.objects.filter(pk=first).update(
        created_at=now, status=Job.FAILED, finished_at=now + dt.timedelta(minutes=5)
    )
    assert "skipped" in dumps_jobs.schedule(now + dt.timedelta(minutes=15))
    # An hour after the failure: a second try, and only one.
    later = now + dt.timedelta(minutes=70)
    retried = dumps_jobs.schedule(later)["started"]
    Job.objects.filter(pk=retried).update(created_at=later)
    assert retried != first
    assert "skipped" in dumps_jobs.schedule(later)
    # Without retries, a failure waits for the next day's slot.
    settings.UMS_DUMP_RETRY_MINUTES = 0
    Job.objects.filter(pk=retried).update(status=Job.FAILED, finished_at=later)
    assert "skipped" in dumps_jobs.schedule(later + dt.timedelta(hours=5))
    assert "started" in dumps_jobs.schedule(later + dt.timedelta(days=1))


def test_portal_lists_dumps_and_dumps_now_for_operators_only(cast: Cast, nfs_dir: Path) -> None:
    from django.test import Client

    target = nfs_target(cast, nfs_dir)
    operator, tenant_admin = Client(), Client()
    operator.force_login(cast.root_admin)
    tenant_admin.force_login(cast.sub_admin)
    assert tenant_admin.get("/backup/dumps/").status_code == 403
    assert tenant_admin.post("/backup/dumps/now/").status_code == 403

    response = operator.post("/backup/dumps/now/")
    assert response.status_code == 302 and "/jobs/" in response["Location"]
    job = Job.objects.get(kind="backup.dump")
    assert job.status == Job.SUCCEEDED, job.error
    page = operator.get("/backup/dumps/").content.decode()
    assert target.name in page and job.result["dump"] in page
    assert "Dump now" in page and "Check dumps" in page
    response = operator.post(f"/backup/dumps/check/{target.pk}/")
    assert response.status_code == 302
    assert Dump.objects.get(target=target).status == Dump.OK
    assert "verified" in operator.get("/backup/dumps/").content.decode()


def test_the_dump_list_runs_a_constant_number_of_queries(
    cast: Cast, nfs_dir: Path, django_assert_max_num_queries
) -> None:
    from django.utils import timezone

    client = token_client(cast.root_admin)
    for index in range(3):
        target = nfs_target(cast, nfs_dir, name=f"NFS {index}")
        for day in range(5):
            Dump.objects.create(
                target=target,
                customer_path=target.customer_path,
                name=f"ums-dump-2026120{day + 1}T023000Z-j{index * 10 + day}",
                created_at=timezone.now(),
                observed_at=timezone.now(),
            )
    client.get("/api/v1/backup/dumps/")  # warm the token and session caches
    with django_assert_max_num_queries(6):
        response = client.get("/api/v1/backup/dumps/")
    assert len(response.json()["results"]) == 15
