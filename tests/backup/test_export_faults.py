"""An export job whose worker dies mid-stream heals by itself: a real Celery worker (and
beat, for the reconciler) runs the export of a snapshot from a real IMAP node (zfs-fuse,
read through a read-only clone); its pool is SIGKILLed while the tar is streaming; the
reconciler runs the job again, which reuses the clone left behind, writes the export
whole and destroys the clone. The result is a valid tar with the right checksum."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import tarfile
import time
import tracemalloc

import pytest

from backup import export as export_mod
from backup.models import Export, Snapshot
from tests.converge.test_mail_store import IMAP, PASSWORD, _send, _wait_in_node
from tests.fixtures import Cast, token_client
from tests.harness.worker import celery_stack, wait_for
from ums import jobs
from ums.models import Job

from .test_snapshots_node import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    store_fleet,
    zone,
)

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "exportfault.example"
STALE = 6
BIG_MB = 100


def test_export_worker_killed_mid_stream_finishes_on_its_own(
    cast: Cast,
    store_fleet,  # noqa: F811
    settings,
    tmp_path,
) -> None:
    jobs.load_handlers()
    f = store_fleet
    client = token_client(cast.sub_admin)
    domain_id = client.post(
        "/api/v1/mail/domains/", {"name": DOMAIN, "customer": cast.ministry.pk}, format="json"
    ).json()["id"]
    response = client.post(
        "/api/v1/mail/mailboxes/",
        {"domain": domain_id, "localPart": "alice", "password": PASSWORD, "quotaMb": 400},
        format="json",
    )
    assert response.status_code == 201, response.content
    mailbox_id = response.json()["id"]
    token = f"fault-{secrets.token_hex(8)}"
    _send(f, f"alice@{DOMAIN}", token)
    cur = f"/var/mail/vhosts/{DOMAIN}/alice/Maildir/cur"
    _wait_in_node(f, f"/var/mail/vhosts/{DOMAIN}/alice/Maildir/new", token)
    # A large message of random bytes, so the stream lasts long enough to be cut.
    f.in_node(IMAP, ["sh", "-c", f"head -c {BIG_MB}M /dev/urandom > {cur}/1.big.example:2,S"])
    response = client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")
    assert response.status_code == 202, response.content
    snapshot = Snapshot.objects.get(domain_id=domain_id)

    settings.UMS_JOB_STALE_SECONDS = STALE
    env = {
        "UMS_NODE_SETTINGS": json.dumps(settings.UMS_CONVERGE),
        "UMS_JOB_STALE_SECONDS": str(STALE),
        "UMS_RECONCILE_INTERVAL": "1",
        "UMS_AUTO_CONVERGE": "false",
        "UMS_BACKUP_KEY": settings.UMS_BACKUP_KEY,
    }
    with celery_stack(tmp_path, env=env) as (worker, _beat):
        response = client.post(
            "/api/v1/backup/exports/",
            {"mailbox": mailbox_id, "snapshot": snapshot.pk},
            format="json",
        )
        assert response.status_code == 202, response.content
        export = Export.objects.get(pk=response.json()["id"])

        def streaming() -> bool:
            job = Job.objects.get(pk=export.job_id)
            return job.status == Job.RUNNING and 0 < job.progress_done < BIG_MB * 2**20 // 2

        wait_for(streaming, timeout=60, interval=0.05, what="the export streaming")
        assert worker.kill_pool(), worker.log_tail()
        clones = f.in_node(IMAP, ["zfs", "list", "-H", "-o", "name"]).stdout
        assert f"ums-export-{export.pk}" in clones  # the dead run left its clone

        def done() -> bool:
            export.refresh_from_db()
            return export.status in (Export.READY, Export.FAILED)

        wait_for(done, timeout=120, what="the export to finish after the kill")
    job = Job.objects.get(pk=export.job_id)
    assert export.status == Export.READY, f"{export.error}\n{job.log}\n{worker.log_tail()}"
    assert job.status == Job.SUCCEEDED and job.attempts >= 2
    assert f"ums-export-{export.pk}" not in f.in_node(IMAP, ["zfs", "list", "-H"]).stdout
    assert not export_mod.file_path(export).with_name(f"{export.file_name}.part").exists()
    tar = b"".join(client.get(f"/api/v1/backup/exports/{export.pk}/download/").streaming_content)
    assert hashlib.sha256(tar).hexdigest() == export.sha256
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        names = {m.name: m for m in archive.getmembers()}
        assert names["alice/Maildir/cur/1.big.example:2,S"].size == BIG_MB * 2**20
        assert any(
            m.isfile() and token.encode() in archive.extractfile(m).read()
            for m in names.values()
            if m.size < 2**20
        )

    # Measured: a live export of the same mailbox, run in this process; then again under
    # tracemalloc, whose peak shows the tar never sits in memory whole.
    started = time.monotonic()
    response = client.post("/api/v1/backup/exports/", {"mailbox": mailbox_id}, format="json")
    elapsed = time.monotonic() - started
    assert response.json()["status"] == Export.READY, response.content
    tracemalloc.start()
    response = client.post("/api/v1/backup/exports/", {"mailbox": mailbox_id}, format="json")
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert response.json()["status"] == Export.READY, response.content
    assert peak < 16 * 2**20, peak
    print(
        f"live export of {BIG_MB} MiB over SSH to the controller: {elapsed:.1f} s "
        f"({BIG_MB / elapsed:.0f} MiB/s); peak Python allocations {peak / 2**20:.1f} MiB"
    )
